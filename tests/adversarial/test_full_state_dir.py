"""ENOSPC in the state directory while a VM stops (issue 11, lower): 653d5a9's monitor
died on the database error without restoring anything. Now the files are restored
at once, and the record is finished once the disk has room again. The full disk is
real: the state directory is a small tmpfs filled to the last byte."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial.vmutil import disk, image, image_dir, stop_all, vm_xml, wait_until
from fsutil import config, state
from svirt.domain import parse_domain
from svirt.host.procs import pid_alive
from svirt.launch.lifecycle import start_domain
from svirt.state.domains import DomainStore

pytestmark = pytest.mark.qemu


@pytest.fixture
def small_state() -> Iterator[Path]:
    with image_dir() as d:
        st = d / "state"
        st.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(st)], check=True
        )
        try:
            yield d
        finally:
            subprocess.run(["umount", "-l", str(st)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"\0")
        except OSError:
            pass
    return filler


def test_monitor_restores_on_a_full_state_dir(small_state: Path) -> None:
    cfg = config(small_state, vm_identity="auto")
    a = image(small_state, "a.img", uid=1001, gid=1001)
    before = state(a)
    try:
        res = start_domain(cfg, parse_domain(vm_xml("full", [disk(a, "vda")])))
        rec = DomainStore(cfg.state_dir).read("full")
        assert rec is not None and rec.owner is not None
        assert state(a) != before
        filler = fill(cfg.state_dir)
        os.kill(res.pid, signal.SIGKILL)
        assert wait_until(lambda: state(a) == before), "files not restored on a full disk"
        # The monitor is still there, waiting to finish the record.
        assert pid_alive(rec.owner)
        filler.unlink()
        assert wait_until(lambda: not pid_alive(rec.owner), 30.0)
        assert DomainStore(cfg.state_dir).read("full") is None
        assert state(a) == before
    finally:
        (cfg.state_dir / "filler").unlink(missing_ok=True)
        stop_all(cfg)
