"""Crash injection at random points with several disk kinds, and concurrency rounds
(issue 11's adversarial pass, kept as a suite). The crashes are real SIGKILLs of real
processes; the only fake is *where* a labelling process dies (a hook after step k).
Every round ends with every file exactly as before and nothing left in the ledgers."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial.vmutil import image, image_dir, stop_all, vm_xml
from fsutil import config, getfacl, state
from svirt.conf import Config
from svirt.domain import parse_domain
from svirt.launch.lifecycle import reconcile
from svirt.security.manager import SecurityManager

SHARED = "system_u:object_r:svirt_image_t:s0"
CONTENT = "system_u:object_r:virt_content_t:s0"
SVIRT = [sys.executable, "-c", "from svirt.cli.main import entry; entry()"]


@pytest.fixture
def imgdir() -> Iterator[Path]:
    with image_dir() as d:
        yield d


def disk_kinds(d: Path) -> tuple[str, list[Path]]:
    """raw, qcow2 over a backing file, read-only, shareable, a disk in a sub-directory."""
    raw = image(d, "raw.img", uid=1001, gid=1001)
    base = d / "base.qcow2"
    top = d / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top)],
        check=True,
    )
    for p, label in ((base, CONTENT), (top, "system_u:object_r:virt_image_t:s0")):
        os.setxattr(p, "security.selinux", label.encode() + b"\0")
        os.chmod(p, 0o600)
    iso = image(d, "cd.iso", label=CONTENT, mode=0o644)
    share = image(d, "share.img", label=SHARED, uid=3000, gid=3000, mode=0o660)
    (d / "sub").mkdir(mode=0o755)
    sub = image(d / "sub", "deep.img", uid=1002, gid=1002)

    def dsk(p: Path, t: str, fmt: str = "raw", flags: str = "") -> str:
        return (
            f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
            f"<source file='{p}'/><target dev='{t}' bus='virtio'/>{flags}</disk>"
        )

    disks = [
        dsk(raw, "vda"),
        dsk(top, "vdb", "qcow2"),
        dsk(iso, "vdc", flags="<readonly/>"),
        dsk(share, "vdd", flags="<shareable/>"),
        dsk(sub, "vde"),
    ]
    return vm_xml("crash", disks), [raw, base, top, iso, share, sub, d, d / "sub"]


def everything(files: list[Path]) -> dict[Path, tuple[object, str]]:
    return {p: (state(p), getfacl(p)) for p in files}


def nothing_left(cfg: Config) -> None:
    db = sqlite3.connect(cfg.state_dir / "svirt.db")
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in ("domains", "journal_tx", "mcs_reservations", "vm_identities"):
            if table in tables:  # vm_identities exists once the per-VM identity was used
                assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        db.close()


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_sigkill_at_random_steps_of_labelling(imgdir: Path, mode: str) -> None:
    xml, files = disk_kinds(imgdir)
    before = everything(files)
    cfg = config(imgdir, vm_identity=mode)
    probe = SecurityManager(cfg)
    steps = len(probe.set_ops(probe.gen_labels(parse_domain(xml))))
    probe.release_labels(probe.gen_labels(parse_domain(xml)))
    rng = random.Random(1100 + len(mode))
    for k in sorted(rng.sample(range(steps), min(6, steps))):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child dies at step k

            def die(i: int, k: int = k) -> None:
                if i == k:
                    os.kill(os.getpid(), signal.SIGKILL)

            try:
                SecurityManager(cfg).label_domain(parse_domain(xml), step_hook=die)
            finally:
                os._exit(3)  # labelled completely: k was past the last step
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"step {k} of {steps}: the child was not killed"
        SecurityManager(cfg).recover()
        assert everything(files) == before, f"SIGKILL after step {k} of {steps}"
        nothing_left(cfg)


@pytest.mark.qemu
def test_monitor_killed_at_random_moments(imgdir: Path) -> None:
    xml, files = disk_kinds(imgdir)
    before = everything(files)
    cfg = config(imgdir, vm_identity="auto")
    conf = imgdir / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{cfg.state_dir}"\nvm_identity = "auto"\n'
    )
    (imgdir / "vm.xml").write_text(xml)
    rng = random.Random(11)
    try:
        for _ in range(4):
            proc = subprocess.Popen(
                [*SVIRT, "start", str(imgdir / "vm.xml"), "--config", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.0, 0.3))
            mgr = SecurityManager(cfg)
            rec = mgr.store.read("crash")
            if rec is not None and rec.owner is not None:
                for victim in {rec.owner, rec.pid} - {None}:
                    assert victim is not None
                    # A monitor or QEMU of this test's own state directory.
                    os.kill(victim, signal.SIGKILL)
            proc.wait()
            stop_all(cfg)
            reconcile(cfg)
            deadline = time.monotonic() + 20
            while everything(files) != before and time.monotonic() < deadline:
                time.sleep(0.05)
                reconcile(cfg)
            assert everything(files) == before
            nothing_left(cfg)
    finally:
        stop_all(cfg)


@pytest.mark.qemu
def test_concurrent_starts_same_name_and_same_image(imgdir: Path) -> None:
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    b = image(imgdir, "b.img", uid=1002, gid=1002)
    before = everything([a, b, imgdir])
    cfg = config(imgdir, vm_identity="auto")
    conf = imgdir / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{cfg.state_dir}"\nvm_identity = "auto"\n'
    )

    def xml(name: str, img: Path) -> Path:
        p = imgdir / f"{name}-{img.stem}.xml"
        p.write_text(
            vm_xml(
                name,
                [
                    f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                    f"<source file='{img}'/><target dev='vda' bus='virtio'/></disk>"
                ],
            )
        )
        return p

    try:
        for _round in range(2):
            jobs = [xml("same", a), xml("same", b), xml("other", a), xml("third", b)]
            procs = [
                subprocess.Popen(
                    [*SVIRT, "start", str(j), "--config", str(conf)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for j in jobs
            ]
            ok = [p.wait() == 0 for p in procs]
            running = {r.domain.name for r in SecurityManager(cfg).store.records()}
            # One "same" at most; a and b each used by at most one running VM.
            assert sum(ok) == len(running) <= 3
            users: dict[str, int] = {}
            for r in SecurityManager(cfg).store.records():
                for dsk in r.domain.disks:
                    src = str(dsk.source.path)  # type: ignore[union-attr]
                    users[src] = users.get(src, 0) + 1
            assert all(n == 1 for n in users.values()), users
            stop_all(cfg)
            assert everything([a, b, imgdir]) == before
            nothing_left(cfg)
    finally:
        stop_all(cfg)
