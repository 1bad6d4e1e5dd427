"""Helpers of the enforcing suite (the audit log as the lab's auditd writes it)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

AUDIT_LOG = Path("/var/log/audit/audit.log")
DAEMON_CONTEXT = "system_u:system_r:virtd_t:s0-s0:c0.c1023"


def avc_lines() -> list[str]:
    try:
        text = AUDIT_LOG.read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.startswith("type=AVC ")]


def wait_for_avc(pred: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
    """The first AVC line ``pred`` accepts, waiting for auditd to write it (auditd
    flushes asynchronously); fails naming ``what`` if none comes."""
    deadline = time.monotonic() + timeout
    while True:
        found = [ln for ln in avc_lines() if pred(ln)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no AVC in {AUDIT_LOG} within {timeout:.0f} s for {what}")
        time.sleep(0.1)


def avc_field(line: str, name: str) -> str | None:
    m = re.search(rf"\b{name}=(\S+)", line)
    return m.group(1).strip('"') if m else None


def set_boolean(name: str, value: bool) -> None:
    subprocess.run(["setsebool", name, "1" if value else "0"], check=True)
    got = Path(f"/sys/fs/selinux/booleans/{name}").read_text().split()[0]
    assert got == ("1" if value else "0"), f"setsebool {name} did not take"
