"""Real QEMU started through svirt.launch.process: as the unprivileged QEMU user, in its
own mount namespace with a private /dev, reachable over QMP; hotplug of a real block
device (a loop device) into that namespace; and failures reported from the child with
the failing step."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svirt.conf import DEFAULT_CGROUP_DEVICE_ACL
from svirt.domain import Disk, Domain, StorageSource, parse_domain
from svirt.errors import LaunchError
from svirt.host import namespace as ns
from svirt.host.ids import Identity, resolve_identity
from svirt.launch import process, qemu
from svirt.launch.qmp import QMPClient

pytestmark = pytest.mark.qemu

CONTEXT = "system_u:system_r:svirt_t:s0:c10,c20"


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    """A directory the QEMU user can traverse (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="svirt-launch-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def qemu_user() -> Identity:
    return resolve_identity("svirt-qemu", "svirt-qemu")


class VM:
    def __init__(self, spawned: process.Spawned, qmp: QMPClient, log: Path, ready: float) -> None:
        self.spawned, self.qmp, self.log, self.ready_seconds = spawned, qmp, log, ready
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.spawned.pid

    def wait(self, timeout: float = 10) -> int | None:
        self.exit_code = process.wait_exit(self.pid, timeout)
        return self.exit_code


@pytest.fixture
def launch(vm_dir: Path) -> Iterator[Any]:
    vms: list[VM] = []

    def start(
        domain: Domain,
        identity: Identity | None,
        *,
        private_dev: bool = True,
        exec_context: str | None = None,
    ) -> VM:
        n = len(vms)
        sock_path, log = vm_dir / f"{domain.name}{n}.qmp", vm_dir / f"{domain.name}{n}.log"
        t0 = time.perf_counter()
        plan = ns.plan_private_dev(ns.domain_dev_paths(domain)) if private_dev else None
        sock = process.bind_monitor_socket(sock_path)
        try:
            cmd = qemu.build_command(
                domain, qmp_fd=sock.fileno(), kvm_available=qemu.kvm_usable(identity)
            )
            spawned = process.spawn(
                cmd.argv,
                log_path=log,
                identity=identity,
                dev_plan=plan,
                exec_context=exec_context,
                pass_fds=[sock.fileno()],
            )
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(sock_path))
        finally:
            sock.close()
        qmp = QMPClient.from_socket(client, timeout=20)
        vm = VM(spawned, qmp, log, time.perf_counter() - t0)
        vms.append(vm)
        return vm

    yield start
    for vm in vms:
        vm.qmp.close()
        if vm.exit_code is None:  # never signal a reaped pid: it may be someone else's now
            process.terminate(vm.pid, 5)


def _ids(pid: int) -> dict[str, list[int]]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
    return out


def _domain(name: str, devices: str = "") -> Domain:
    return parse_domain(
        f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>"
        f"<devices>{devices}</devices></domain>"
    )


def test_qemu_runs_confined(vm_dir: Path, qemu_user: Identity, launch: Any) -> None:
    image = vm_dir / "disk.raw"
    image.write_bytes(b"\0" * 1024 * 1024)
    os.chown(image, qemu_user.uid, qemu_user.gid)  # what the DAC driver does before start
    dom = _domain(
        "confined",
        f"<disk type='file'><source file='{image}'/><target dev='vda'/></disk><serial type='pty'/>",
    )
    vm = launch(dom, qemu_user, exec_context=CONTEXT)

    ids = _ids(vm.pid)
    assert ids["Uid"] == [qemu_user.uid] * 4
    assert ids["Gid"] == [qemu_user.gid] * 4
    assert ids["Groups"] == list(qemu_user.groups)
    assert ns.mount_namespace_id(vm.pid) != ns.mount_namespace_id()
    defaults = {os.path.basename(p) for p in DEFAULT_CGROUP_DEVICE_ACL if os.path.exists(p)}
    assert set(os.listdir(f"/proc/{vm.pid}/root/dev")) == defaults | {"pts", "shm"}
    assert os.readlink(f"/proc/{vm.pid}/exe") == shutil.which("qemu-system-x86_64")

    # SELinux is off on this kernel: the label is recorded for the caller, not applied.
    assert vm.spawned.exec_context == CONTEXT
    assert vm.spawned.exec_context_enforced is False
    assert vm.spawned.private_dev is True

    assert vm.qmp.query_status()["status"] == "running"
    (disk,) = [b for b in vm.qmp.execute("query-block") if b["qdev"].startswith("/machine/periph")]
    assert disk["inserted"]["file"] == str(image) and not disk["inserted"]["ro"]
    pty = next(c for c in vm.qmp.execute("query-chardev") if c["label"] == "charserial0")
    assert pty["filename"].startswith("pty:/dev/pts/")  # /dev/pts was moved in, ptmx works

    log_mode = os.stat(vm.log).st_mode
    assert stat.S_IMODE(log_mode) == 0o600 and os.stat(vm.log).st_uid == 0
    vm.qmp.quit()
    assert vm.wait() == 0
    print(f"spawn to QMP ready (confined, private /dev): {vm.ready_seconds * 1000:.1f} ms")


def test_uid_without_passwd_entry(launch: Any) -> None:
    nobody = 4242
    with pytest.raises(KeyError):
        pwd.getpwuid(nobody)
    ident = resolve_identity(f"+{nobody}", f"+{nobody}")
    vm = launch(_domain("numeric"), ident)
    assert _ids(vm.pid) == {"Uid": [nobody] * 4, "Gid": [nobody] * 4, "Groups": [nobody]}
    vm.qmp.quit()
    assert vm.wait() == 0


def test_namespaces_off_keeps_our_dev(qemu_user: Identity, launch: Any) -> None:
    vm = launch(_domain("shared-ns"), qemu_user, private_dev=False)
    assert ns.mount_namespace_id(vm.pid) == ns.mount_namespace_id()
    assert vm.spawned.private_dev is False
    assert ns.populate_in_namespace(vm.pid, ["/dev/loop7"]) == ()  # the host /dev already
    assert process.wait_exit(vm.pid, 0.05) is None  # still running
    assert process.terminate(vm.pid, 10) == 0  # QEMU exits cleanly on SIGTERM
    vm.exit_code = 0


@pytest.fixture
def loop_device(vm_dir: Path) -> Iterator[str]:
    backing = vm_dir / "loop.img"
    backing.write_bytes(b"\0" * 1024 * 1024)
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=True)


def test_hotplug_block_device_into_running_vm(
    qemu_user: Identity, launch: Any, loop_device: str
) -> None:
    # An empty SCSI cdrom puts the virtio-scsi controller in; SCSI unplug needs no guest.
    vm = launch(
        _domain("hotplug", "<disk device='cdrom'><target dev='sda' bus='scsi'/></disk>"), qemu_user
    )
    root = f"/proc/{vm.pid}/root"
    host_before = os.stat(loop_device)
    assert not os.path.exists(root + loop_device)

    t0 = time.perf_counter()
    assert ns.populate_in_namespace(vm.pid, [loop_device]) == (loop_device,)
    populate_ms = (time.perf_counter() - t0) * 1000
    copy = os.stat(root + loop_device)
    assert stat.S_ISBLK(copy.st_mode) and copy.st_rdev == host_before.st_rdev
    # The labelling engine's job, done here by hand: the namespace copy only.
    os.chown(root + loop_device, qemu_user.uid, qemu_user.gid)
    assert os.stat(loop_device).st_uid == host_before.st_uid

    disk = Disk(
        device="disk",
        target="sdb",
        bus="scsi",
        source=StorageSource(type="block", path=loop_device, format="raw"),
    )
    for node in qemu.disk_blockdevs(disk):
        vm.qmp.blockdev_add(node)
    vm.qmp.device_add(qemu.disk_device(disk))
    blocks = {b["qdev"]: b for b in vm.qmp.execute("query-block")}
    assert blocks["scsi0-0-0-1"]["inserted"]["file"] == loop_device

    vm.qmp.device_del(qemu.disk_device_id(disk), timeout=20)
    for node in reversed(qemu.disk_blockdevs(disk)):
        vm.qmp.blockdev_del(node["node-name"])
    assert ns.remove_from_namespace(vm.pid, [loop_device]) == (loop_device,)
    assert not os.path.exists(root + loop_device)
    after = os.stat(loop_device)
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        host_before.st_uid,
        host_before.st_gid,
        host_before.st_mode,
    )
    vm.qmp.quit()
    assert vm.wait() == 0
    print(f"populate one node in a running VM's namespace: {populate_ms:.2f} ms")


# --- failures, reported with the step -------------------------------------------------------


def test_missing_binary(vm_dir: Path) -> None:
    with pytest.raises(LaunchError, match=r"^Cannot find QEMU binary qemu-nonexistent: "):
        process.spawn(["qemu-nonexistent"], log_path=vm_dir / "log")


def test_exec_failure_reports_the_step(vm_dir: Path, qemu_user: Identity) -> None:
    bogus = vm_dir / "not-an-executable"
    bogus.write_bytes(b"\x7fELF garbage")
    bogus.chmod(0o755)
    with pytest.raises(LaunchError) as info:
        process.spawn([str(bogus)], log_path=vm_dir / "log", identity=qemu_user)
    assert str(info.value) == f"cannot execute binary {bogus}: Exec format error"


def test_private_dev_failure_reports_the_step(vm_dir: Path) -> None:
    plan = ns.plan_private_dev(DEFAULT_CGROUP_DEVICE_ACL)
    with pytest.raises(LaunchError) as info:
        process.spawn(
            ["qemu-system-x86_64", "-version"],
            log_path=vm_dir / "log",
            dev_plan=plan,
            scratch="/nonexistent-svirt",
        )
    assert str(info.value) == (
        "building the private /dev: Failed to mount devfs on /nonexistent-svirt type tmpfs: "
        "No such file or directory"
    )


def test_qemu_error_after_exec_lands_in_the_log(vm_dir: Path, qemu_user: Identity) -> None:
    dom = _domain(
        "bad-disk", f"<disk type='file'><source file='{vm_dir}/absent'/><target dev='vda'/></disk>"
    )
    sock = process.bind_monitor_socket(vm_dir / "bad.qmp")
    try:
        cmd = qemu.build_command(dom, qmp_fd=sock.fileno())
        spawned = process.spawn(
            cmd.argv, log_path=vm_dir / "bad.log", identity=qemu_user, pass_fds=[sock.fileno()]
        )
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(vm_dir / "bad.qmp"))
    finally:
        sock.close()
    with pytest.raises(LaunchError, match="End of file from qemu monitor"):
        QMPClient.from_socket(client, timeout=20)
    assert process.wait_exit(spawned.pid, 10) == 1
    assert "Could not open" in (vm_dir / "bad.log").read_text()


def test_bind_monitor_socket_refuses_non_sockets(vm_dir: Path) -> None:
    (vm_dir / "plain").write_text("")
    with pytest.raises(LaunchError, match="refusing to replace non-socket"):
        process.bind_monitor_socket(vm_dir / "plain")
    first = process.bind_monitor_socket(vm_dir / "m.sock")
    first.close()  # leaves a stale socket file behind, as a crashed svirt would
    second = process.bind_monitor_socket(vm_dir / "m.sock")
    assert stat.S_IMODE(os.stat(vm_dir / "m.sock").st_mode) == 0o600
    second.close()
