"""docs/api.md's examples, run as written (issue 14): each ```python block, in a fresh
namespace with the placeholders the document names (CONFIG, IMAGE, XML, LOG) bound to a
temporary svirt.conf and state directory, a real image file with real xattrs, the first
example's own XML, and seed 000's audit log. The VM examples start real QEMU."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import svirt
from fsutil import image_dir, make_file, state, svirt_xattrs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"
LOG = Path(__file__).parent / "data" / "audit" / "seed_000_raw.log"
ORIGINAL = "system_u:object_r:virt_image_t:s0"
OLD_BOOT = "1749811180"  # seed 000's timestamp: an earlier boot

pytestmark = pytest.mark.qemu


def examples() -> list[tuple[str, int, str]]:
    """(heading, line, code) of each ```python block, in document order."""
    out = []
    heading = ""
    lines = DOC.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            heading = lines[i][3:].strip()
        if lines[i].strip() == "```python":
            start = i + 1
            end = lines.index("```", start)
            out.append((heading, start + 1, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return out


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory the QEMU user can reach (pytest's tmp dirs are 0700)."""
    with image_dir("svirt-apidoc-") as d:
        yield d


def _stop_all(config: Path) -> None:
    host = svirt.Host(config)
    for vm in host.domains():
        if vm.state == "running":
            vm.stop(force=True)


def _stale_libvirt_state(path: Path) -> None:
    """What libvirt leaves on a running VM's disk (seed 000's getfattr), from an earlier
    boot: libvirtd died with the VM and the host rebooted."""
    os.setxattr(path, "security.selinux", b"system_u:object_r:svirt_image_t:s0:c249,c396\0")
    lv = "trusted.libvirt.security."
    for name, value in (
        ("dac", "+0:+0"),
        ("ref_dac", "1"),
        ("ref_selinux", "1"),
        ("selinux", ORIGINAL),
        ("timestamp_dac", OLD_BOOT),
        ("timestamp_selinux", OLD_BOOT),
    ):
        os.setxattr(path, lv + name, value.encode())
    os.chown(path, 107, 107)


def test_every_example_runs(place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = place / "svirt.conf"
    config.write_text(
        'security_driver = ["selinux"]\n'
        f'state_dir = "{place / "state"}"\n'
        f'libvirt_run_dir = "{place / "libvirt-run"}"\n'
    )
    image = make_file(place / "vm1.img", uid=1001, gid=1001)
    os.truncate(image, 1 << 20)
    before = state(image)
    found = examples()
    headings = [h for h, _, _ in found]
    assert headings == [
        "Start a VM and stop it",
        "Label, plan and restore without a VM",
        "List domains and their labels",
        "Verify isolation",
        "Doctor and recover",
        "Search and explain an audit log",
        "Ask the policy",
        "Errors",
    ], "an example was added or moved: bind its placeholders and checks here"
    xml: str | None = None
    try:
        for heading, line, code in found:
            if heading == "Doctor and recover":
                _stale_libvirt_state(image)
            names: dict[str, object] = {
                "CONFIG": str(config),
                "IMAGE": str(image),
                "LOG": str(LOG),
                "XML": xml,
            }
            exec(compile(code, f"{DOC}:{line}", "exec"), names)
            out = capsys.readouterr().out
            if heading == "Start a VM and stop it":
                xml = str(names["xml"])  # the XML the other examples call XML
                name, pid, running = out.splitlines()[0].split()
                assert (name, running) == ("vm1", "running") and int(pid) > 1
                assert re.fullmatch(r"system_u:system_r:svirt_t:s0:c\d+,c\d+", out.split()[3])
                assert out.splitlines()[-1] == "quit"
                # vm.started is the full StartResult, stop's result says what it restored
                assert "(applied to 1 file)" in out
                assert "  disk sda selinux label system_u:object_r:svirt_image_t:s0:c" in out
                assert f"set (original {ORIGINAL} remembered)" in out
                assert f"  disk sda selinux label restored to {ORIGINAL}" in out
                assert state(image) == before  # every label and owner back
            elif heading == "Label, plan and restore without a VM":
                assert f"selinux {image} {ORIGINAL} -> system_u:object_r:svirt_image_t:s0:c" in out
                assert "dac " in out
                assert f"  disk sda selinux label restored to {ORIGINAL}" in out
                assert state(image) == before
            elif heading == "List domains and their labels":
                assert out.startswith("svirt vm1 running ")
                assert "Labels(process='system_u:system_r:svirt_t:s0:c" in out
                assert "<seclabel type='dynamic' model='selinux' relabel='yes'>" in out
                assert "('vm1',)" in out.splitlines()  # sharers
                # the hotplugged disk: listed, then unplugged with its label and owner back
                extra = Path(f"{image}.extra")
                assert f"file disk sdb {extra}" in out.splitlines()
                assert "removed" in out.splitlines()[-1]
                assert svirt_xattrs(extra) == [] and os.stat(extra).st_uid == 0
            elif heading == "Verify isolation":
                assert out.splitlines()[0].startswith("['vm1'] ")
                assert out.splitlines()[1] == "isolated"
                assert f"vm1 disk sda {image} read-write" in out.splitlines()  # the matrix
                assert out.splitlines()[-1] == "True True"  # an HTML page; vm1 usable
            elif heading == "Doctor and recover":
                assert "stale-timestamp" in out and "would " in out
                assert svirt_xattrs(image) == []
                assert os.getxattr(image, "security.selinux") == ORIGINAL.encode() + b"\0"
            elif heading == "Search and explain an audit log":
                assert out.startswith("15655 ('AVC', 'SYSCALL', 'PROCTITLE')\n----\ntime->")
                assert "qemu-kvm ('write',) system_u:system_r:svirt_t:s0:c392,c662" in out
                assert "fix: " in out
            elif heading == "Ask the policy":
                assert out.splitlines()[0] == "False CONSTRAINT"
                assert "mlsconstrain" in out
            elif heading == "Errors":
                assert out.splitlines()[0] == "failed to get domain 'nosuch'"
                assert out.splitlines()[1].startswith("XML error: ")
            assert svirt.Host(config).listing() == []  # no VM or label left behind
    finally:
        _stop_all(config)
