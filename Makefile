# The two commands of README.md: `make demo` and `make test`. Both install what they need.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/svirt demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-enforcing

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# --- the SELinux-enforcing lab (issue 10): boot Debian's kernel with the reference policy
# enforcing (scripts/lab) and run tests/enforcing inside it. A host where the lab cannot
# boot fails here; it never skips.
.PHONY: test-enforcing lab
LAB_AUDIT_LOG ?= lab-audit.log
test-enforcing: setup
	scripts/lab run --audit-log $(LAB_AUDIT_LOG) -- .venv/bin/python -m pytest -p no:cacheprovider tests/enforcing $(ENFORCING_ARGS)

lab: setup
	scripts/lab build

# --- tools (issue 14): regenerate svirt(1) and the bash/zsh completions from the parser
# and install them (scripts/setup.sh does this too; only changed files are written).
.PHONY: man-completion
man-completion: setup
	$(PY) -m svirt.cli.docs install
