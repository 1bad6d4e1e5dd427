"""QEMU is identified by pid and start time, never by name (issue 11, high and
med-high), with real QEMU:

- a domain name with a comma: QEMU gets ``guest=c,,x``; 653d5a9 looked for ``guest=c,x``,
  so stop waited 60 s and, once the monitor was gone, the next command restored the
  disk and released the MCS pair while QEMU still ran;
- recovery found an "orphan" QEMU by ``-name guest=NAME,`` and SIGKILLed another state
  directory's VM of that name;
- a recorded pid now held by another process (pid reuse) was taken for the VM's QEMU.
  The only fake: the start time recorded for that pid is moved by one tick, which is
  exactly what a reused pid looks like.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial.vmutil import disk, image, image_dir, stop_all, vm_xml, wait_until
from fsutil import config, state
from svirt.conf import Config
from svirt.domain import parse_domain
from svirt.errors import LaunchError
from svirt.host.files import snapshot
from svirt.host.procs import pid_alive
from svirt.launch.lifecycle import qemu_alive, reconcile, start_domain, stop_domain
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainState, DomainStore

pytestmark = pytest.mark.qemu


@pytest.fixture
def imgdir() -> Iterator[Path]:
    with image_dir() as d:
        yield d


@pytest.fixture
def cfg(imgdir: Path) -> Iterator[Config]:
    c = config(imgdir)
    yield c
    stop_all(c)


def test_comma_in_name_stop_and_monitor_death(cfg: Config, imgdir: Path) -> None:
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    before = state(a)
    res = start_domain(cfg, parse_domain(vm_xml("c,x", [disk(a, "vda")])))
    rec = DomainStore(cfg.state_dir).read("c,x")
    assert rec is not None and rec.owner is not None and qemu_alive(rec)
    labelled = state(a)
    os.kill(rec.owner, signal.SIGKILL)  # the monitor dies; QEMU keeps running
    assert wait_until(lambda: not os.path.exists(f"/proc/{rec.owner}"))
    assert reconcile(cfg) == []  # QEMU still runs: its labels stay
    assert pid_alive(res.pid) and state(a) == labelled
    assert stop_domain(cfg, "c,x", force=True, timeout=2.0) in ("quit", "terminated", "killed")
    assert not pid_alive(res.pid)
    assert state(a) == before


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat, read here independently of svirt."""
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[19])


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_recovery_never_kills_by_name(cfg: Config, imgdir: Path, tmp_path: Path) -> None:
    """Another state directory's VM of the same name survives our recovery of a record
    whose monitor died before a QEMU pid was recorded."""
    other = config(tmp_path / "other")
    b = image(imgdir, "b.img", uid=1002, gid=1002)
    try:
        res = start_domain(other, parse_domain(vm_xml("same", [disk(b, "vda")])))
        mgr = SecurityManager(cfg)
        dead = _dead_pid()
        dom = parse_domain(vm_xml("same", []))
        mgr.store.claim("same", DomainState.STARTING, dead)
        mgr.store.set_state("same", DomainState.LAUNCHING, owner=dead)
        mgr.store.write(dom, DomainState.LAUNCHING, owner=dead)
        reconcile(cfg)
        assert pid_alive(res.pid), "recovery killed another state directory's VM"
        assert DomainStore(cfg.state_dir).read("same") is None
    finally:
        stop_all(other)


def test_reused_pid_is_not_our_qemu(cfg: Config, imgdir: Path) -> None:
    """A record's pid now names another process whose command line even says
    ``guest=vm,``: stop must not signal it, and the record is reconciled."""
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    before = state(a)
    res = start_domain(cfg, parse_domain(vm_xml("vm", [disk(a, "vda")])))
    rec = DomainStore(cfg.state_dir).read("vm")
    assert rec is not None and rec.owner is not None
    os.kill(rec.owner, signal.SIGKILL)
    os.kill(res.pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(res.pid) and not pid_alive(rec.owner))
    impostor = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-name", "guest=vm,debug-threads=on"]
    )
    try:
        start = start_time(impostor.pid)
        mgr = SecurityManager(cfg)
        # The record now names the impostor's pid, with the start time the VM's QEMU had.
        mgr.conn.execute(
            "UPDATE domains SET pid=?, pid_start=? WHERE name='vm'", (impostor.pid, start - 1)
        )
        mgr.store.sync_views()
        rec2 = mgr.store.read("vm")
        assert rec2 is not None and not qemu_alive(rec2)
        assert reconcile(cfg) == ["vm"]  # its QEMU is gone: labels restored
        with pytest.raises(LaunchError, match="is not running"):
            stop_domain(cfg, "vm", force=True, timeout=1.0)
        assert impostor.poll() is None, "stop signalled a process that is not the VM's QEMU"
        assert state(a) == before
    finally:
        impostor.kill()
        impostor.wait()


def test_journal_of_a_reused_pid_is_recovered(tmp_path: Path) -> None:
    """An open transaction whose pid is now another live process is rolled back."""
    from fsutil import make_file

    img = make_file(tmp_path / "a.img", uid=1000, gid=1000)
    before = state(img)
    cfg = config(tmp_path)
    mgr = SecurityManager(cfg)
    # A transaction left open: labels applied, journal entry never closed.
    tx = mgr.journal.begin("vm", "set", [(str(img), snapshot(str(img)))])
    os.chown(img, 4242, 4242)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = start_time(live.pid)
        mgr.conn.execute(
            "UPDATE journal_tx SET pid=?, pid_start=? WHERE id=?", (live.pid, start - 1, tx)
        )
        SecurityManager(cfg).recover()
        assert state(img) == before
        assert not mgr.journal.is_open(tx)
    finally:
        live.kill()
        live.wait()


def test_qemu_never_runs_unrecorded(tmp_path: Path) -> None:
    """spawn() lets the child exec only after on_forked (the monitor records pid and
    start time) returned: when recording fails (or the monitor dies there), nothing
    runs, so recovery never has to look for a QEMU by name."""
    from svirt.launch.process import spawn

    marker = tmp_path / "ran"
    seen: list[int] = []

    def refuse(pid: int) -> None:
        seen.append(pid)
        raise RuntimeError("the record could not be written")

    with pytest.raises(RuntimeError):
        spawn(
            ["/bin/sh", "-c", f"touch {marker}"],
            log_path=tmp_path / "log",
            on_forked=refuse,
        )
    assert seen and not pid_alive(seen[0])
    assert not marker.exists()
    spawned = spawn(
        ["/bin/sh", "-c", f"touch {marker}"],
        log_path=tmp_path / "log",
        on_forked=seen.append,
    )
    assert seen[-1] == spawned.pid
    os.waitpid(spawned.pid, 0)
    assert marker.exists()
