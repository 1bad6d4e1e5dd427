"""``svirt audit explain --json`` against ``audit2why`` on every denial of generated logs.

audit2why judges each AVC/USER_AVC record alone, with the record's own permissions, from
the binary policy. explain groups denials for display, so for every record audit2why
explains, the group(s) holding that record's contexts, class and permissions must give
the same reason: 100 % agreement. Records audit2why cannot judge (a context the loaded
policy does not know) must be the ones explain marks as unknown to the policy.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from svirt.cli.main import main
from svirt.policy.oracle import default_policy_path

ROOT = Path(__file__).resolve().parent.parent
AUDIT2WHY = shutil.which("audit2why")
POLICY = default_policy_path()

pytestmark = pytest.mark.skipif(
    AUDIT2WHY is None or POLICY is None, reason="audit2why or a binary policy is missing"
)

_RECORD = re.compile(
    r"avc:\s+denied\s+\{ ([^}]*) \} for .*?scontext=(\S+) tcontext=(\S+) tclass=(\S+)"
)
# audit2why's wording -> the policy's reason code (what explain reports as policy_reason)
_REASONS = [
    ("Missing type enforcement (TE) allow rule", "TERULE"),
    ("would be allowed by active policy", "ALLOW"),
    ("should be dontaudit'd", "DONTAUDIT"),
    ("set incorrectly", "BOOLEAN"),
    ("Constraint rule", "CONSTRAINT"),
    ("Missing role allow rule", "RBAC"),
    ("Typebounds", "BOUNDS"),
]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def audit2why(log: Path) -> list[tuple[tuple[str, str, str, frozenset[str]], str]]:
    """(record key, reason code) of every record audit2why explains, in its order."""
    assert AUDIT2WHY is not None
    with log.open("rb") as fh:
        out = subprocess.run(
            [AUDIT2WHY, "-p", str(POLICY)], stdin=fh, capture_output=True, check=True
        ).stdout.decode()
    found: list[tuple[tuple[str, str, str, frozenset[str]], str]] = []
    blocks = re.split(r"\n(?=type=)", out)
    for block in blocks:
        if not block.startswith("type="):
            continue
        head, _, why = block.partition("\n")
        m = _RECORD.search(head)
        assert m is not None, head
        perms, scon, tcon, tclass = m.groups()
        codes = [code for text, code in _REASONS if text in why]
        assert len(codes) == 1, f"unrecognised audit2why answer: {why!r}"
        found.append(((scon, tcon, tclass, frozenset(perms.split())), codes[0]))
    return found


def explain_json(log: Path, tmp: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    conf = tmp / "svirt.conf"
    conf.write_text(f'state_dir = "{tmp}/state"\nlibvirt_run_dir = "{tmp}/run"\n')
    rc = main(
        [
            "audit",
            "explain",
            "--config",
            str(conf),
            "--policy",
            str(POLICY),
            "--json",
            "-if",
            str(log),
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize(
    "shape",
    ["realistic-40-mixed", "realistic-140-enriched", "project-raw"],
)
def test_explain_agrees_with_audit2why_on_every_record(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "audit.log"
    with log.open("wb") as fh:
        if shape.startswith("realistic"):
            gen = _load("gen_audit_log_realistic")
            rate = 40.0 if "-40-" in shape else 140.0
            frac = 0.5 if shape.endswith("mixed") else 1.0
            gen.generate(fh, events=2500, rate=rate, enriched_fraction=frac, seed=31)
        else:
            gen = _load("gen_audit_log")
            gen.generate(fh, events=2500, seed=32, qemu_weight=30)
    doc = explain_json(log, tmp_path, capsys)
    by_key: dict[tuple[str, str, str, frozenset[str]], set[str]] = {}
    unknown: set[tuple[str, str, str, frozenset[str]]] = set()
    denials = doc["denials"]
    assert isinstance(denials, list)
    for x in denials:
        d = x["denial"]
        key = (d["scontext"], d["tcontext"], d["tclass"], frozenset(d["perms"]))
        reason = x["policy_reason"]
        if reason is None or reason.startswith("BAD"):
            unknown.add(key)
        else:
            by_key.setdefault(key, set()).add(reason)
    judged = audit2why(log)
    assert len(judged) > 100, "the log has denials of many kinds"
    assert {code for _, code in judged} >= {"TERULE", "ALLOW", "BOOLEAN", "CONSTRAINT"}
    disagree = [(key, code, by_key.get(key)) for key, code in judged if by_key.get(key) != {code}]
    assert not disagree, f"{len(disagree)} of {len(judged)} records differ, e.g. {disagree[:3]}"
    # what audit2why could not judge is exactly what explain says the policy does not know
    judged_keys = {key for key, _ in judged}
    assert not (unknown & judged_keys)
    assert set(by_key) <= judged_keys
    total = sum(int(x["denial"]["count"]) for x in denials)
    log_records = sum(
        1 for line in log.read_bytes().splitlines() if b"avc:  denied" in line.split(b"\x1d")[0]
    )
    assert total == log_records, "explain counted every denial of the log"
