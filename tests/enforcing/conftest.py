"""The enforcing suite runs inside the lab (``scripts/lab run``: Debian's kernel with the
reference policy loaded enforcing, svirt in ``virtd_t``, real auditd) and only there:
``make test-enforcing`` boots the lab and runs it; the host's ``make test`` runs it the
same way after the host suite.

Everything here is real: the kernel refuses, auditd logs, QEMU (TCG inside the TCG guest,
no guest OS) opens its disks or fails to. At the end the suite prints every AVC the
kernel logged as a denial (permissive=0) while it ran."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from labutil import DAEMON_CONTEXT, avc_field, avc_lines, set_boolean

from svirt.conf import Config, config_from_mapping


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("SVIRT_LAB"):
        pytest.exit(
            "tests/enforcing runs inside the SELinux-enforcing lab: make test-enforcing "
            "(or scripts/lab run -- .venv/bin/python -m pytest tests/enforcing)",
            returncode=4,
        )
    problems = []
    if Path("/sys/fs/selinux/enforce").read_text().strip() != "1":
        problems.append("SELinux is not enforcing")
    con = Path("/proc/self/attr/current").read_text().rstrip("\0\n")
    if con != DAEMON_CONTEXT:
        problems.append(f"the suite runs as {con}, not {DAEMON_CONTEXT}")
    if problems:
        pytest.exit("the lab is not what the suite needs: " + "; ".join(problems), returncode=4)


_SHOWN = re.compile(r"avc:\s+denied\s+\{ ([^}]*) \}.*?scontext=(\S+) tcontext=(\S+) tclass=(\S+)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for line in avc_lines():
        if "permissive=0" not in line:
            continue
        m = _SHOWN.search(line)
        if not m:
            continue
        comm = avc_field(line, "comm") or "?"
        name = avc_field(line, "name") or avc_field(line, "path") or ""
        key = (comm, m.group(1).strip(), m.group(2), m.group(3), m.group(4), name)
        seen[key] = seen.get(key, 0) + 1
    tr = terminalreporter
    tr.section("real AVCs the kernel logged during the suite (denied, permissive=0)")
    if not seen:
        tr.write_line("none")
    for (comm, perms, scon, tcon, tclass, name), n in sorted(seen.items()):
        target = f" {name}" if name else ""
        tr.write_line(
            f"{n:3d}x {comm}: denied {{ {perms} }} {tclass}{target}  scontext={scon} "
            f"tcontext={tcon}"
        )


@pytest.fixture(scope="session")
def top() -> Iterator[Path]:
    """The suite's images live here: 0755, so the QEMU user can reach them."""
    d = Path(tempfile.mkdtemp(prefix="svirt-enforcing-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cfg(top: Path) -> Config:
    conf = top / "svirt.conf"
    conf.write_text(f'state_dir = "{top / "state"}"\n')
    return config_from_mapping({"state_dir": str(top / "state")}, source=str(conf))


@pytest.fixture(scope="session", autouse=True)
def execmem_on() -> Iterator[None]:
    """QEMU runs under TCG in the lab (no nested KVM), and the reference policy lets
    svirt_t map executable memory only with virt_use_execmem: on for the suite (at run
    time, as an administrator of a TCG host would), off in the test that shows why."""
    set_boolean("virt_use_execmem", True)
    yield
    set_boolean("virt_use_execmem", False)
