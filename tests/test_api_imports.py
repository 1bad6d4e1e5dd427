"""The CLI is a face over the public API (issue 14): every module of ``svirt.cli`` imports
from svirt only ``svirt``, ``svirt.audit`` and ``svirt.policy`` (names in their
``__all__``) and ``svirt.cli.*``. Checked on the source with ``ast``: imports at any
depth (inside functions, ``TYPE_CHECKING`` blocks) and ``importlib.import_module`` /
``__import__`` calls with a literal or f-string module name."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import svirt
import svirt.audit
import svirt.policy

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "src" / "svirt" / "cli"

# The public modules and the names each exports.
PUBLIC: dict[str, frozenset[str]] = {
    "svirt": frozenset(svirt.__all__) | {"audit", "policy", "cli"},
    "svirt.audit": frozenset(svirt.audit.__all__),
    "svirt.policy": frozenset(svirt.policy.__all__),
}
ALLOWED = "svirt, svirt.audit, svirt.policy (names in their __all__) and svirt.cli.*"


def _module_verdict(module: str) -> str | None:
    """Why importing the module ``module`` is not allowed, or None."""
    if module != "svirt" and not module.startswith("svirt."):
        return None  # the standard library or a third-party package
    if module in PUBLIC or module == "svirt.cli" or module.startswith("svirt.cli."):
        return None
    return "not part of the public API"


def _dynamic(call: ast.Call) -> bool:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name in ("import_module", "__import__")


def violations(source: str, filename: str) -> list[str]:
    """``filename:line: module (why)`` for each import outside the allowed set."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(source, filename)

    def bad(node: ast.AST, module: str, why: str) -> None:
        line = getattr(node, "lineno", 0)
        found.append((line, f"{filename}:{line}: {module} ({why})"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                why = _module_verdict(alias.name)
                if why:
                    bad(node, alias.name, why)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # relative to svirt.cli (the modules checked are its direct children)
                base = ["svirt", "cli"][: max(0, 3 - node.level)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            why = _module_verdict(module)
            if why:
                bad(node, module, why)
            elif module in PUBLIC:
                for alias in node.names:
                    if alias.name == "*":
                        bad(node, f"{module}.*", "a star import hides what is used")
                    elif alias.name not in PUBLIC[module]:
                        bad(node, f"{module}.{alias.name}", f"not in {module}.__all__")
        elif isinstance(node, ast.Call) and _dynamic(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                why = _module_verdict(arg.value)
                if why:
                    bad(node, arg.value, why)
            elif isinstance(arg, ast.JoinedStr):
                head = "".join(
                    v.value
                    for v in arg.values[:1]
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                )
                if not head.startswith("svirt.cli."):
                    bad(node, f"f-string {head!r}...", "a computed module name outside svirt.cli")
            else:
                bad(node, ast.unparse(arg), "a computed module name cannot be checked")
    return [text for _, text in sorted(found)]


def test_cli_imports_only_the_public_api() -> None:
    files = sorted(CLI.glob("*.py"))
    assert len(files) >= 12  # every command module is looked at
    found: list[str] = []
    for path in files:
        found += violations(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "svirt.cli may import from svirt only " + ALLOWED + ":\n" + "\n".join(found)


def test_the_check_finds_each_kind_of_import() -> None:
    """The checker itself, on a module that breaks every rule once (and keeps them once)."""
    source = textwrap.dedent(
        """\
        import json
        import svirt.launch.lifecycle
        from svirt import Host, SecurityManager
        from svirt.audit import search, native
        from svirt.errors import SvirtError
        from . import output
        from .. import doctor
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from svirt.state.domains import DomainRecord
        def run():
            from svirt.policy.oracle import PolicyOracle
            importlib.import_module("svirt.host.selinux")
            importlib.import_module(f"svirt.cli.{name}")
            importlib.import_module(f"svirt.{name}")
            __import__(name)
        """
    )
    assert violations(source, "x.py") == [
        "x.py:2: svirt.launch.lifecycle (not part of the public API)",
        "x.py:3: svirt.SecurityManager (not in svirt.__all__)",
        "x.py:4: svirt.audit.native (not in svirt.audit.__all__)",
        "x.py:5: svirt.errors (not part of the public API)",
        "x.py:7: svirt.doctor (not in svirt.__all__)",
        "x.py:10: svirt.state.domains (not part of the public API)",
        "x.py:12: svirt.policy.oracle (not part of the public API)",
        "x.py:13: svirt.host.selinux (not part of the public API)",
        "x.py:15: f-string 'svirt.'... (a computed module name outside svirt.cli)",
        "x.py:16: name (a computed module name cannot be checked)",
    ]
