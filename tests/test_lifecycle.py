"""End-to-end: real QEMU (TCG, no guest OS) started and stopped under sVirt (issue 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import config, image_dir, make_file, state, svirt_xattrs
from svirt.conf import Config
from svirt.domain import parse_disk, parse_domain
from svirt.errors import LaunchError
from svirt.host.ids import resolve_uid
from svirt.host.namespace import mount_namespace_id
from svirt.launch.lifecycle import (
    attach_disk,
    detach_disk,
    qemu_alive,
    reconcile,
    start_domain,
    stop_domain,
)
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore

pytestmark = pytest.mark.qemu
QEMU_UID = resolve_uid("svirt-qemu")
EXPECTED_DEV = {"full", "kvm", "null", "ptmx", "pts", "random", "shm", "urandom", "zero"}


def vm_xml(name: str, disks: list[str], extra: str = "") -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>{extra}"
        f"<devices>{''.join(disks)}</devices></domain>"
    )


def disk(path: Path, target: str, *, bus: str = "virtio", flags: str = "") -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{path}'/><target dev='{target}' bus='{bus}'/>{flags}</disk>"
    )


def image(tmp: Path, name: str, **kw: object) -> Path:
    p = make_file(tmp / name, **kw)  # type: ignore[arg-type]
    os.truncate(p, 1 << 20)
    return p


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Images where the QEMU user can reach them (pytest's own tmp dirs are 0700, and the
    chown DAC mode, like libvirt, does not open up parent directories)."""
    with image_dir("svirt-test-") as d:
        yield d


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return config(tmp_path)


def stop_all(cfg: Config) -> None:
    for rec in list(DomainStore(cfg.state_dir).records()):
        try:
            stop_domain(cfg, rec.domain.name, force=True)
        except LaunchError:
            pass


def wait_until(pred: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_two_vms_confined_and_restored(cfg: Config, tmp_path: Path) -> None:
    a = image(tmp_path, "a.img", uid=1001, gid=1001)
    b = image(tmp_path, "b.img", uid=1002, gid=1002)
    shared = image(tmp_path, "shared.img")
    before = {p: state(p) for p in (a, b)}
    try:
        ra = start_domain(
            cfg,
            parse_domain(vm_xml("a", [disk(a, "vda"), disk(shared, "vdb", flags="<shareable/>")])),
        )
        rb = start_domain(
            cfg,
            parse_domain(vm_xml("b", [disk(b, "vda"), disk(shared, "vdb", flags="<shareable/>")])),
        )
        la, lb = ra.label, rb.label
        assert la and lb and la.split(":", 3)[3] != lb.split(":", 3)[3]  # distinct pairs
        for res, img in ((ra, a), (rb, b)):
            st = os.stat(f"/proc/{res.pid}")
            assert st.st_uid == QEMU_UID  # QEMU runs as the unprivileged user
            assert mount_namespace_id(res.pid) != mount_namespace_id()
            assert set(os.listdir(f"/proc/{res.pid}/root/dev")) == EXPECTED_DEV
            assert os.getxattr(img, "security.selinux").rstrip(b"\0").decode() == res.imagelabel
            assert os.stat(img).st_uid == QEMU_UID
        # the shareable image has the plain image label: no categories
        assert os.getxattr(shared, "security.selinux") == b"system_u:object_r:svirt_image_t:s0\0"
        assert not ra.enforced  # SELinux is off here: the label is recorded, not applied
        stop_domain(cfg, "a", force=True)
        stop_domain(cfg, "b", force=True)
        for p in (a, b):
            assert state(p) == before[p]
            assert svirt_xattrs(p) == []
        assert list(DomainStore(cfg.state_dir).records()) == []
        mgr = SecurityManager(cfg)
        assert mgr.selinux is not None and list(mgr.selinux.ledger.reservations()) == []
    finally:
        stop_all(cfg)


def test_qemu_killed_monitor_restores(cfg: Config, tmp_path: Path) -> None:
    a = image(tmp_path, "a.img", uid=1001, gid=1001)
    before = state(a)
    try:
        res = start_domain(cfg, parse_domain(vm_xml("k", [disk(a, "vda")])))
        os.kill(res.pid, signal.SIGKILL)
        store = DomainStore(cfg.state_dir)
        assert wait_until(lambda: store.read("k") is None)
        assert state(a) == before
    finally:
        stop_all(cfg)


def test_killed_monitor_is_reconciled(cfg: Config, tmp_path: Path) -> None:
    a = image(tmp_path, "a.img", uid=1001, gid=1001)
    before = state(a)
    try:
        res = start_domain(cfg, parse_domain(vm_xml("m", [disk(a, "vda")])))
        rec = DomainStore(cfg.state_dir).read("m")
        assert rec is not None and rec.owner is not None and qemu_alive(rec)
        os.kill(rec.owner, signal.SIGKILL)  # the monitor dies; QEMU keeps running
        assert wait_until(lambda: not os.path.exists(f"/proc/{rec.owner}"))
        assert reconcile(cfg) == []  # QEMU still runs: nothing to reconcile yet
        os.kill(res.pid, signal.SIGKILL)
        assert wait_until(lambda: not qemu_alive(rec))
        assert reconcile(cfg) == ["m"]
        assert state(a) == before
    finally:
        stop_all(cfg)


def test_in_use_image_refused_without_disturbing_first(cfg: Config, tmp_path: Path) -> None:
    a = image(tmp_path, "a.img", uid=1001, gid=1001)
    original = state(a)
    try:
        start_domain(cfg, parse_domain(vm_xml("first", [disk(a, "vda")])))
        running = state(a)
        with pytest.raises(LaunchError, match=r"Setting different SELinux label on .* in use"):
            start_domain(cfg, parse_domain(vm_xml("second", [disk(a, "vda")])))
        assert state(a) == running  # the first VM's labels and remembered state intact
        assert DomainStore(cfg.state_dir).read("second") is None
        stop_domain(cfg, "first", force=True)
        assert state(a) == original
    finally:
        stop_all(cfg)


def test_failed_start_leaves_nothing(cfg: Config, tmp_path: Path) -> None:
    a = image(tmp_path, "a.img", uid=1001, gid=1001)
    before = state(a)
    missing = tmp_path / "missing.img"
    with pytest.raises(LaunchError, match="Cannot access storage file"):
        start_domain(cfg, parse_domain(vm_xml("bad", [disk(a, "vda"), disk(missing, "vdb")])))
    assert state(a) == before
    assert list(DomainStore(cfg.state_dir).records()) == []
    bad_binary = config(tmp_path, qemu_binary="/nonexistent/qemu")
    with pytest.raises(LaunchError, match=r"cannot execute binary|/nonexistent/qemu"):
        start_domain(bad_binary, parse_domain(vm_xml("bad2", [disk(a, "vda")])))
    assert state(a) == before
    mgr = SecurityManager(cfg)
    assert mgr.selinux is not None and list(mgr.selinux.ledger.reservations()) == []


def test_attach_detach_round_trip(cfg: Config, tmp_path: Path) -> None:
    a = image(tmp_path, "a.img", uid=1001, gid=1001)
    hot = image(tmp_path, "hot.img", uid=1003, gid=1003)
    hot_before = state(hot)
    try:
        res = start_domain(cfg, parse_domain(vm_xml("h", [disk(a, "sda", bus="scsi")])))
        new = attach_disk(cfg, "h", parse_disk(disk(hot, "sdb", bus="scsi")))
        assert [d.target for d in new.disks] == ["sda", "sdb"]
        assert os.getxattr(hot, "security.selinux").rstrip(b"\0").decode() == res.imagelabel
        assert os.stat(hot).st_uid == QEMU_UID
        rec = DomainStore(cfg.state_dir).read("h")
        assert rec is not None and [d.target for d in rec.domain.disks] == ["sda", "sdb"]
        with pytest.raises(LaunchError, match="target sdb already exists"):
            attach_disk(cfg, "h", parse_disk(disk(hot, "sdb", bus="scsi")))
        detach_disk(cfg, "h", "sdb")
        assert state(hot) == hot_before
        rec = DomainStore(cfg.state_dir).read("h")
        assert rec is not None and [d.target for d in rec.domain.disks] == ["sda"]
    finally:
        stop_all(cfg)


def test_stop_errors(cfg: Config) -> None:
    with pytest.raises(LaunchError, match="domain 'nope' is not running"):
        stop_domain(cfg, "nope")


def test_cycles_of_parallel_vms_leave_nothing(cfg: Config, tmp_path: Path) -> None:
    """A short version of the stress run (bench/stress_lifecycle.py runs 20 × 4)."""
    imgs = [image(tmp_path, f"s{i}.img", uid=1100 + i, gid=1100 + i) for i in range(4)]
    before = {p: state(p) for p in imgs}
    mounts_before = Path("/proc/self/mountinfo").read_text()
    try:
        for _cycle in range(3):
            pids = [
                start_domain(cfg, parse_domain(vm_xml(f"s{i}", [disk(p, "vda")]))).pid
                for i, p in enumerate(imgs)
            ]
            labels = {os.getxattr(p, "security.selinux") for p in imgs}
            assert len(labels) == 4
            for i in range(4):
                stop_domain(cfg, f"s{i}", force=True)
            for pid in pids:
                assert not os.path.exists(f"/proc/{pid}") or qemu_gone(pid)
        for p in imgs:
            assert state(p) == before[p]
        assert Path("/proc/self/mountinfo").read_text() == mounts_before
        assert list(DomainStore(cfg.state_dir).records()) == []
        mgr = SecurityManager(cfg)
        assert mgr.selinux is not None and list(mgr.selinux.ledger.reservations()) == []
    finally:
        stop_all(cfg)


def qemu_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "loop.img"
    backing.write_bytes(b"")
    os.truncate(backing, 4 << 20)
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        os.setxattr(dev, "security.selinux", b"system_u:object_r:fixed_disk_device_t:s0\0")
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=True)


def test_dev_node_labelled_only_in_the_private_dev(
    cfg: Config, tmp_path: Path, loop_device: str
) -> None:
    """As libvirt: a block device QEMU gets is recreated in its private /dev and only that
    copy carries the VM's label and owner; the host's node is never touched."""
    host_before = (
        os.stat(loop_device),
        os.getxattr(loop_device, "security.selinux"),
        os.listxattr(loop_device),
    )
    xml = vm_xml(
        "blk",
        [
            f"<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
            f"<source dev='{loop_device}'/><target dev='vda' bus='virtio'/></disk>"
        ],
    )
    try:
        res = start_domain(cfg, parse_domain(xml))
        copy = f"/proc/{res.pid}/root{loop_device}"
        assert os.getxattr(copy, "security.selinux", follow_symlinks=False).rstrip(b"\0") == (
            (res.imagelabel or "").encode()
        )
        assert os.stat(copy).st_uid == QEMU_UID
        assert os.stat(copy).st_rdev == host_before[0].st_rdev
        now = (
            os.stat(loop_device),
            os.getxattr(loop_device, "security.selinux"),
            os.listxattr(loop_device),
        )
        assert (now[0].st_uid, now[1], now[2]) == (
            host_before[0].st_uid,
            host_before[1],
            host_before[2],
        )
        stop_domain(cfg, "blk", force=True)
        after = (
            os.stat(loop_device),
            os.getxattr(loop_device, "security.selinux"),
            os.listxattr(loop_device),
        )
        assert (after[0].st_uid, after[1], after[2]) == (
            host_before[0].st_uid,
            host_before[1],
            host_before[2],
        )
    finally:
        stop_all(cfg)


def test_hotplugged_dev_node_is_labelled_in_the_namespace(
    cfg: Config, tmp_path: Path, loop_device: str
) -> None:
    a = image(tmp_path, "a.img", uid=1001, gid=1001)
    host_label = os.getxattr(loop_device, "security.selinux")
    try:
        res = start_domain(cfg, parse_domain(vm_xml("hp", [disk(a, "sda", bus="scsi")])))
        xml = (
            f"<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
            f"<source dev='{loop_device}'/><target dev='sdb' bus='scsi'/></disk>"
        )
        attach_disk(cfg, "hp", parse_disk(xml))
        copy = f"/proc/{res.pid}/root{loop_device}"
        assert os.getxattr(copy, "security.selinux", follow_symlinks=False).rstrip(b"\0") == (
            (res.imagelabel or "").encode()
        )
        assert os.stat(copy).st_uid == QEMU_UID
        assert os.getxattr(loop_device, "security.selinux") == host_label
        detach_disk(cfg, "hp", "sdb")
        assert os.getxattr(loop_device, "security.selinux") == host_label
    finally:
        stop_all(cfg)
    assert os.getxattr(loop_device, "security.selinux") == host_label


def test_pty_in_dev_pts_is_labelled_on_the_host(cfg: Config, tmp_path: Path) -> None:
    """/dev/pts is moved into the private /dev, not copied: its nodes are the host's, so
    they are labelled (and restored) on the host."""
    master, slave = os.openpty()
    pty = os.ttyname(slave)
    before = (os.stat(pty).st_uid, os.stat(pty).st_gid)
    a = image(tmp_path, "a.img")
    serial = f"<serial type='dev'><source path='{pty}'/><target port='0'/></serial>"
    try:
        start_domain(cfg, parse_domain(vm_xml("tty", [disk(a, "vda"), serial])))
        assert os.stat(pty).st_uid == QEMU_UID
        stop_domain(cfg, "tty", force=True)
        assert (os.stat(pty).st_uid, os.stat(pty).st_gid) == before
    finally:
        stop_all(cfg)
        os.close(master)
        os.close(slave)


def test_link_outside_dev_to_a_device_is_followed(
    cfg: Config, tmp_path: Path, loop_device: str
) -> None:
    link = tmp_path / "disk-link"
    link.symlink_to(loop_device)
    host_label = os.getxattr(loop_device, "security.selinux")
    xml = vm_xml(
        "lnk",
        [
            f"<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
            f"<source dev='{link}'/><target dev='vda' bus='virtio'/></disk>"
        ],
    )
    try:
        res = start_domain(cfg, parse_domain(xml))
        copy = f"/proc/{res.pid}/root{loop_device}"
        assert os.stat(copy).st_uid == QEMU_UID
        assert os.getxattr(loop_device, "security.selinux") == host_label
        stop_domain(cfg, "lnk", force=True)
    finally:
        stop_all(cfg)
    assert os.getxattr(loop_device, "security.selinux") == host_label
