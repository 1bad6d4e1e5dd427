"""Medium findings of issue 11, with real QEMU:

- an image path swapped for a symlink to another VM's image while running: 653d5a9's
  stop restored the *other* VM's image while it ran;
- a file that had no security.selinux kept the VM's label after stop, and after a
  failed start;
- a failed start of a domain using as <readonly/> a file a running VM uses as
  <shareable/> relabelled it virt_content_t for good;
- a disk path with a newline or a tab was mangled by the live XML and never restored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial.vmutil import disk, image, image_dir, stop_all, vm_xml
from fsutil import config, state, svirt_xattrs
from svirt.conf import Config
from svirt.domain import parse_domain
from svirt.errors import LaunchError
from svirt.launch.lifecycle import start_domain, stop_domain
from svirt.state.domains import DomainStore

pytestmark = pytest.mark.qemu


@pytest.fixture
def imgdir() -> Iterator[Path]:
    with image_dir() as d:
        yield d


@pytest.fixture
def cfg(imgdir: Path) -> Iterator[Config]:
    c = config(imgdir, vm_identity="auto")
    yield c
    stop_all(c)


def test_swapped_for_a_symlink_to_another_vms_image(cfg: Config, imgdir: Path) -> None:
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    b = image(imgdir, "b.img", uid=1002, gid=1002)
    start_domain(cfg, parse_domain(vm_xml("a", [disk(a, "vda")])))
    start_domain(cfg, parse_domain(vm_xml("b", [disk(b, "vda")])))
    b_running = state(b)
    moved = imgdir / "a.moved"
    os.rename(a, moved)
    a.symlink_to(b)  # a's path now names b's image
    stop_domain(cfg, "a", force=True, timeout=2.0)
    assert state(b) == b_running, "stopping a restored b's image while b runs"
    a.unlink()
    os.rename(moved, a)
    stop_domain(cfg, "b", force=True, timeout=2.0)
    assert svirt_xattrs(b) == []


def test_unlabelled_file_is_unlabelled_again(cfg: Config, imgdir: Path) -> None:
    a = image(imgdir, "a.img", uid=1001, gid=1001, label=None)
    before = state(a)
    assert "security.selinux" not in before["xattrs"]  # type: ignore[operator]
    start_domain(cfg, parse_domain(vm_xml("a", [disk(a, "vda")])))
    assert "security.selinux" in os.listxattr(a)
    monitor_log = cfg.state_dir / "qemu" / "a.monitor.log"
    assert monitor_log.stat().st_mode & 0o777 == 0o600
    stop_domain(cfg, "a", force=True, timeout=2.0)
    assert state(a) == before
    assert not monitor_log.exists(), "<name>.monitor.log is removed when the monitor ends"
    bad = config(imgdir, vm_identity="auto", qemu_binary="/bin/false")
    with pytest.raises(LaunchError):
        start_domain(bad, parse_domain(vm_xml("a", [disk(a, "vda")])))
    assert state(a) == before


def test_failed_readonly_start_keeps_the_shareable_label(cfg: Config, imgdir: Path) -> None:
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    shared = image(imgdir, "shared.img", mode=0o600)
    start_domain(
        cfg, parse_domain(vm_xml("a", [disk(a, "vda"), disk(shared, "vdb", flags="<shareable/>")]))
    )
    running = state(shared)
    missing = imgdir / "missing.img"
    with pytest.raises(LaunchError):
        start_domain(
            cfg,
            parse_domain(
                vm_xml("b", [disk(shared, "vdb", flags="<readonly/>"), disk(missing, "vdc")])
            ),
        )
    assert state(shared) == running, "the running VM's shareable disk was relabelled"
    bad = config(imgdir, vm_identity="auto", qemu_binary="/bin/false")
    with pytest.raises(LaunchError):
        start_domain(bad, parse_domain(vm_xml("c", [disk(shared, "vdb", flags="<readonly/>")])))
    assert state(shared) == running, "a failed start relabelled a disk in use"


@pytest.mark.parametrize("char", ["\n", "\t"])
def test_path_with_newline_or_tab(cfg: Config, imgdir: Path, char: str) -> None:
    a = image(imgdir, f"odd{char}name.img", uid=1001, gid=1001)
    before = state(a)
    start_domain(cfg, parse_domain(vm_xml("odd", [disk(a, "vda")])))
    rec = DomainStore(cfg.state_dir).read("odd")
    assert rec is not None and rec.domain.disks[0].source.path == str(a)  # type: ignore[union-attr]
    stop_domain(cfg, "odd", force=True, timeout=2.0)
    assert state(a) == before
