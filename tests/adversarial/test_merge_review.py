"""Found by the review of the merged issues 10-13 and 15, each reproduced first on real
files: the full-disk fallback of the monitor (issue 11) left its failed restore's journal
entry open (the next recovery put the VM's labels back after its level was released) and
ignored svirt's kept originals (issue 12); ``recover --apply`` ignored
``allow_hard_links``. The full disk itself is not made here (tests/adversarial/
test_full_state_dir.py makes a real one): the failed restore is its open journal entry,
exactly what a write failing after ``Journal.begin`` leaves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial.vmutil import disk, image, image_dir, vm_xml
from fsutil import config, state
from svirt.conf import Config
from svirt.doctor import recover
from svirt.domain import parse_domain
from svirt.host.files import snapshot
from svirt.launch.lifecycle import _restore_without_state
from svirt.security.manager import SecurityManager


@pytest.fixture
def imgdir() -> Iterator[Path]:
    with image_dir() as d:
        yield d


def _labelled(cfg: Config, img: Path) -> tuple[SecurityManager, object]:
    mgr = SecurityManager(cfg)
    live = mgr.label_domain(parse_domain(vm_xml("fb", [disk(img, "vda")])))
    # A stop whose restore failed on the full disk after its journal entry opened: the
    # entry holds the labelled state as its "before".
    mgr.journal.begin(live.name, "restore", [(str(img), snapshot(str(img)))])
    return mgr, live


def test_full_disk_fallback_closes_the_failed_restore(imgdir: Path) -> None:
    cfg = config(imgdir)
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    before = state(a)
    mgr, live = _labelled(cfg, a)
    assert state(a) != before
    _restore_without_state(mgr, live, False)  # type: ignore[arg-type]
    assert state(a) == before
    assert list(mgr.journal.open_transactions()) == []
    SecurityManager(cfg).recover()  # the next command
    assert state(a) == before, "recovery put the VM's labels back after its level was released"


def test_full_disk_fallback_puts_back_originals_libvirt_erased(imgdir: Path) -> None:
    cfg = config(imgdir)
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    before = state(a)
    mgr, live = _labelled(cfg, a)
    for name in os.listxattr(a):
        if name.startswith("trusted.libvirt.security."):
            os.removexattr(a, name)  # libvirt's defect: its cleanup erased them
    _restore_without_state(mgr, live, False)  # type: ignore[arg-type]
    assert state(a) == before


def test_recover_apply_honours_allow_hard_links(imgdir: Path) -> None:
    cfg = config(imgdir, allow_hard_links=True)
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    os.link(a, imgdir / "a-link.img")
    before = state(a)
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(vm_xml("hl", [disk(a, "vda")])))
    mgr.store.drop("hl")  # the record is lost; the labels and remembered xattrs stay
    assert state(a) != before
    report = recover(cfg, [str(a)], apply=True)
    assert not report.failed, report.actions
    assert state(a) == before
