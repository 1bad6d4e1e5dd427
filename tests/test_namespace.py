"""The private /dev: mountinfo parsing, planning from the host, building it in a real
mount namespace of a forked child, and hotplug population/removal by setns.

Everything here is real: device nodes are created under the host's /dev (in a
directory of the test's own, removed afterwards), the child really unshares its mount
namespace, and the checks read the child's /dev through /proc/PID/root/dev.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from svirt.conf import DEFAULT_CGROUP_DEVICE_ACL
from svirt.domain import parse_domain
from svirt.host import namespace as ns
from svirt.host.namespace import NamespaceError, NodeKind

LABEL_DISK = "system_u:object_r:fixed_disk_device_t:s0"
LABEL_LINK = "system_u:object_r:device_t:s0"
LABEL_FILE = "system_u:object_r:svirt_image_t:s0:c1,c2"
QEMU_UID = 999


# --- mountinfo -----------------------------------------------------------------------------

# Shape of this project's machines (see platform.md): /dev/pts and /dev/shm over-mounted,
# plus a nested mount and a mount point with an escaped space.
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12355472k,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24730032k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
29 26 0:26 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24730032k
31 30 0:28 / /dev/shm/inner rw,relatime - tmpfs tmpfs rw
32 24 0:29 / /dev/hugepages\\0401G rw,relatime - hugetlbfs hugetlbfs rw,pagesize=1G
33 27 0:30 / /devices rw,relatime - tmpfs tmpfs rw
"""


def test_dev_submounts_prunes_nested_and_duplicates(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert ns.dev_submounts(info) == ("/dev/hugepages 1G", "/dev/pts", "/dev/shm")


def test_dev_submounts_without_dev_mount(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")
    with pytest.raises(NamespaceError, match=r"^Unable to find any /dev mount$"):
        ns.dev_submounts(info)


def test_dev_submounts_of_this_host() -> None:
    subs = ns.dev_submounts()
    assert "/dev/pts" in subs and "/dev/shm" in subs


# --- a /dev tree of the test's own on the host ----------------------------------------------


@dataclass
class HostTree:
    """/dev/svirt-test-PID/: a char node with owner, mode, ACL and label; a two-link
    symlink chain to it (relative targets); a regular file; a FIFO; a block node."""

    root: str
    node: str
    link1: str
    link2: str
    file: str
    fifo: str
    block: str


@pytest.fixture
def host_tree() -> Iterator[HostTree]:
    root = f"/dev/svirt-test-{os.getpid()}"
    subprocess.run(["rm", "-rf", root], check=True)
    os.mkdir(root)
    t = HostTree(
        root=root,
        node=f"{root}/node",
        link1=f"{root}/by-id/link1",
        link2=f"{root}/link2",
        file=f"{root}/file",
        fifo=f"{root}/fifo",
        block=f"{root}/block",
    )
    try:
        os.mknod(t.node, stat.S_IFCHR | 0o640, os.makedev(1, 3))  # same rdev as /dev/null
        os.chmod(t.node, 0o640)
        os.chown(t.node, 107, 108)
        subprocess.run(["setfacl", "-m", f"u:{QEMU_UID}:rw", t.node], check=True)
        os.setxattr(t.node, "security.selinux", LABEL_DISK.encode() + b"\0")
        os.mkdir(f"{root}/by-id")
        os.symlink("../link2", t.link1)
        os.symlink("node", t.link2)
        os.setxattr(t.link2, "security.selinux", LABEL_LINK.encode() + b"\0", follow_symlinks=False)
        Path(t.file).write_text("shared inode\n")
        os.chmod(t.file, 0o604)
        os.setxattr(t.file, "security.selinux", LABEL_FILE.encode() + b"\0")
        os.mkfifo(t.fifo, 0o600)
        os.mknod(t.block, stat.S_IFBLK | 0o660, os.makedev(7, 200))
        os.chmod(t.block, 0o660)
        os.chown(t.block, 0, 6)
        yield t
    finally:
        subprocess.run(["rm", "-rf", root], check=True)


# --- planning -------------------------------------------------------------------------------


def test_collect_follows_symlink_chain_and_reads_metadata(host_tree: HostTree) -> None:
    nodes = {n.path: n for n in ns.collect_dev_nodes([host_tree.link1], submounts=())}
    assert list(nodes) == [host_tree.link1, host_tree.link2, host_tree.node]
    assert nodes[host_tree.link1].kind is NodeKind.SYMLINK
    assert nodes[host_tree.link1].target == "../link2"
    assert nodes[host_tree.link2].label == LABEL_LINK
    node = nodes[host_tree.node]
    assert node.kind is NodeKind.CHAR
    assert (node.uid, node.gid, node.mode, node.rdev) == (107, 108, 0o660, os.makedev(1, 3))
    # setfacl widened the group class to the mask (rw): mode 0640 became 0660.
    assert node.acl == os.getxattr(host_tree.node, "system.posix_acl_access")
    assert node.label == LABEL_DISK


def test_collect_filters_like_libvirt(host_tree: HostTree) -> None:
    paths = [
        "/var/lib/libvirt/images/a.qcow2",  # outside /dev: visible through the filesystem
        "/dev/pts/0",  # inside a kept sub-mount: shared with the host
        f"{host_tree.root}/missing",  # not on the host: skipped
        host_tree.node,
        host_tree.node + "/",  # the same node twice
        host_tree.file,
        host_tree.fifo,
        host_tree.block,
    ]
    nodes = ns.collect_dev_nodes(paths, submounts=("/dev/pts", "/dev/shm"))
    assert [(n.path, n.kind) for n in nodes] == [
        (host_tree.node, NodeKind.CHAR),
        (host_tree.file, NodeKind.FILE),
        (host_tree.fifo, NodeKind.FILE),
        (host_tree.block, NodeKind.BLOCK),
    ]


def test_collect_symlink_loop_is_refused(host_tree: HostTree) -> None:
    a, b = f"{host_tree.root}/loop-a", f"{host_tree.root}/loop-b"
    os.symlink("loop-b", a)
    os.symlink("loop-a", b)
    with pytest.raises(NamespaceError, match=rf"^Too many levels of symbolic links: {a}$"):
        ns.collect_dev_nodes([a])


def test_domain_dev_paths_defaults_then_resources() -> None:
    dom = parse_domain(
        """<domain type='qemu'><name>p</name><memory>65536</memory><devices>
        <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vda'/></disk>
        <disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vdb'/></disk>
        <serial type='unix'><source mode='bind' path='/run/x.sock'/></serial>
        <serial type='dev'><source path='/dev/ttyS7'/></serial>
        </devices></domain>"""
    )
    assert ns.domain_dev_paths(dom) == (
        *DEFAULT_CGROUP_DEVICE_ACL,
        "/dev/sdz",
        "/img/a.qcow2",
        "/dev/ttyS7",
    )


# --- building in a real namespace -----------------------------------------------------------


@dataclass
class Holder:
    """A forked child sitting in the namespace it built, until the test closes `release`."""

    pid: int
    build_seconds: float
    release: int


def _start_holder(plan: ns.DevPlan, scratch: str = "/tmp") -> Holder:
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(ready_r)
            os.close(hold_w)
            t0 = time.perf_counter()
            ns.build_private_dev(plan, scratch=scratch)
            os.write(ready_w, f"ok {time.perf_counter() - t0}".encode())
            os.close(ready_w)
            os.read(hold_r, 1)  # returns at EOF, when the test closes its end
        except BaseException as exc:
            os.write(ready_w, f"error {exc}".encode())
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    msg = os.read(ready_r, 4096).decode()
    os.close(ready_r)
    if not msg.startswith("ok "):
        os.close(hold_w)
        os.waitpid(pid, 0)
        raise AssertionError(f"namespace child failed: {msg}")
    return Holder(pid=pid, build_seconds=float(msg.split()[1]), release=hold_w)


def _stop_holder(h: Holder) -> None:
    os.close(h.release)
    os.waitpid(h.pid, 0)


@pytest.fixture
def holder_factory() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        _stop_holder(h)


def _tree(root: str, skip: tuple[str, ...]) -> set[str]:
    """Relative paths under `root`, not descending into the kept sub-mounts."""
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            out.add(rel)
        dirnames[:] = [
            d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip
        ]
    return out


def _dev_mount_lines() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sorted(line for line in lines if line.split()[4].startswith(("/dev", "/tmp")))


def test_private_dev_holds_exactly_the_expected_nodes(
    host_tree: HostTree, holder_factory: list[Holder]
) -> None:
    host_listing = sorted(os.listdir("/dev"))
    host_mounts = _dev_mount_lines()
    host_stats = {p: os.lstat(p) for p in (host_tree.node, host_tree.link2, "/dev/null")}
    wanted = [*DEFAULT_CGROUP_DEVICE_ACL, host_tree.link1, host_tree.file, host_tree.block]
    plan = ns.plan_private_dev(wanted)
    holder = _start_holder(plan)
    holder_factory.append(holder)
    pid = holder.pid
    root = f"/proc/{pid}/root/dev"

    assert ns.mount_namespace_id(pid) != ns.mount_namespace_id()
    defaults = {os.path.basename(p) for p in DEFAULT_CGROUP_DEVICE_ACL if os.path.exists(p)}
    name = os.path.basename(host_tree.root)
    expected = defaults | {"pts", "shm"}
    expected |= {name, f"{name}/by-id", f"{name}/by-id/link1", f"{name}/link2"}
    expected |= {f"{name}/node", f"{name}/file", f"{name}/block"}
    assert _tree(root, skip=("pts", "shm")) == expected

    # Device nodes: the host's rdev, owner, mode, ACL and label.
    for host_path in [*(f"/dev/{d}" for d in defaults), host_tree.node, host_tree.block]:
        host, mine = os.lstat(host_path), os.lstat(root + host_path[4:])
        assert stat.S_IFMT(mine.st_mode) == stat.S_IFMT(host.st_mode), host_path
        assert (mine.st_rdev, mine.st_uid, mine.st_gid) == (host.st_rdev, host.st_uid, host.st_gid)
        assert stat.S_IMODE(mine.st_mode) == stat.S_IMODE(host.st_mode), host_path
        assert mine.st_ino != host.st_ino or mine.st_dev != host.st_dev  # a copy, not the host's
    copy = root + host_tree.node[4:]
    acl = "system.posix_acl_access"
    assert os.getxattr(copy, acl) == os.getxattr(host_tree.node, acl)
    assert os.getxattr(copy, "security.selinux") == LABEL_DISK.encode() + b"\0"
    assert "trusted.libvirt.security.dac" not in os.listxattr(copy)

    # The symlink chain, recreated as links with the same targets and labels.
    assert os.readlink(root + host_tree.link1[4:]) == "../link2"
    assert os.readlink(root + host_tree.link2[4:]) == "node"
    link_label = os.getxattr(root + host_tree.link2[4:], "security.selinux", follow_symlinks=False)
    assert link_label == LABEL_LINK.encode() + b"\0"

    # The regular file is the host's inode, bind-mounted: a write shows on the host.
    inside = root + host_tree.file[4:]
    assert os.stat(inside).st_ino == os.stat(host_tree.file).st_ino
    Path(inside).write_text("written from the VM's view\n")
    assert Path(host_tree.file).read_text() == "written from the VM's view\n"

    # /dev/pts and /dev/shm are the host's mounts, moved in.
    assert os.stat(f"{root}/pts").st_dev == os.stat("/dev/pts").st_dev
    assert os.stat(f"{root}/shm").st_dev == os.stat("/dev/shm").st_dev
    minfo = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    dev_line = next(line for line in minfo if line.split()[4] == "/dev")
    assert " - tmpfs devfs " in dev_line and "nosuid" in dev_line.split()[5]
    assert "size=64k" in dev_line and "mode=755" in dev_line
    # The scratch directory the tmpfs was filled on is uncovered again.
    host_points = {
        line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
    }
    assert {line.split()[4] for line in minfo if line.split()[4].startswith("/tmp")} == {
        p for p in host_points if p.startswith("/tmp")
    }

    # The host's /dev is untouched.
    assert sorted(os.listdir("/dev")) == host_listing
    assert _dev_mount_lines() == host_mounts
    for p, before in host_stats.items():
        after = os.lstat(p)
        assert (after.st_ino, after.st_mode, after.st_uid, after.st_gid) == (
            before.st_ino,
            before.st_mode,
            before.st_uid,
            before.st_gid,
        )
    assert not os.path.exists(root + host_tree.fifo[4:])  # not asked for
    print(f"private /dev built in {holder.build_seconds * 1000:.2f} ms")


def test_private_dev_with_defaults_only(holder_factory: list[Holder]) -> None:
    holder = _start_holder(ns.plan_private_dev(DEFAULT_CGROUP_DEVICE_ACL))
    holder_factory.append(holder)
    listing = set(os.listdir(f"/proc/{holder.pid}/root/dev"))
    defaults = {os.path.basename(p) for p in DEFAULT_CGROUP_DEVICE_ACL if os.path.exists(p)}
    assert listing == defaults | {"pts", "shm"}


def test_build_failure_is_reported_with_libvirt_text() -> None:
    plan = ns.plan_private_dev(["/dev/null"])
    with pytest.raises(AssertionError, match="Failed to mount devfs on /nonexistent-svirt"):
        _start_holder(plan, scratch="/nonexistent-svirt")


def test_build_refuses_scratch_under_dev() -> None:
    plan = ns.plan_private_dev(["/dev/null"])
    with pytest.raises(AssertionError, match="it is under /dev"):
        _start_holder(plan, scratch="/dev/shm")


# --- hotplug --------------------------------------------------------------------------------


def test_populate_and_remove_in_running_namespace(
    host_tree: HostTree, holder_factory: list[Holder]
) -> None:
    holder = _start_holder(ns.plan_private_dev(DEFAULT_CGROUP_DEVICE_ACL))
    holder_factory.append(holder)
    pid, root = holder.pid, f"/proc/{holder.pid}/root/dev"

    created = ns.populate_in_namespace(pid, [host_tree.link1, host_tree.file, host_tree.fifo])
    assert created == (
        host_tree.link1,
        host_tree.link2,
        host_tree.node,
        host_tree.file,
        host_tree.fifo,
    )
    copy = os.lstat(root + host_tree.node[4:])
    assert (copy.st_rdev, copy.st_uid, copy.st_gid) == (os.makedev(1, 3), 107, 108)
    assert os.getxattr(root + host_tree.node[4:], "security.selinux") == LABEL_DISK.encode() + b"\0"
    assert os.stat(root + host_tree.file[4:]).st_ino == os.stat(host_tree.file).st_ino
    assert stat.S_ISFIFO(os.stat(root + host_tree.fifo[4:]).st_mode)

    # A second population creates nothing new and keeps the bind mount working.
    assert ns.populate_in_namespace(pid, [host_tree.link1, host_tree.file]) == ()
    assert os.stat(root + host_tree.file[4:]).st_ino == os.stat(host_tree.file).st_ino

    # Relabelling the namespace copy leaves the host node alone (spec §10.3).
    os.setxattr(root + host_tree.node[4:], "security.selinux", LABEL_FILE.encode() + b"\0")
    assert os.getxattr(host_tree.node, "security.selinux") == LABEL_DISK.encode() + b"\0"

    removed = ns.remove_from_namespace(
        pid, [host_tree.link1, host_tree.file, host_tree.fifo, "/dev/null", "/dev/pts/0"]
    )
    assert removed == (host_tree.link1, host_tree.file, host_tree.fifo)
    assert not os.path.lexists(root + host_tree.link1[4:])
    assert not os.path.lexists(root + host_tree.file[4:])
    assert os.path.exists(root + host_tree.node[4:])  # symlink targets stay
    assert os.path.exists(f"{root}/null")  # default devices stay
    assert Path(host_tree.file).read_text() == "shared inode\n"  # the host file survived
    mounts = Path(f"/proc/{pid}/mountinfo").read_text()
    assert host_tree.file not in mounts


def test_hotplug_is_a_no_op_without_a_private_dev(host_tree: HostTree) -> None:
    # Our own pid shares our namespace: the host's /dev is the VM's; never touch it.
    assert ns.populate_in_namespace(os.getpid(), [f"{host_tree.root}/new"]) == ()
    assert ns.remove_from_namespace(os.getpid(), [host_tree.node]) == ()
    assert os.path.exists(host_tree.node)


def test_populate_rolls_back_on_failure(host_tree: HostTree, holder_factory: list[Holder]) -> None:
    holder = _start_holder(ns.plan_private_dev(DEFAULT_CGROUP_DEVICE_ACL))
    holder_factory.append(holder)
    root = f"/proc/{holder.pid}/root/dev"
    # Fill the 64 KiB tmpfs from the VM's side so that a later node cannot get its data:
    # tmpfs keeps symlink targets under 128 bytes in the inode, longer ones in a page.
    long_target = "x" * 200
    os.symlink(long_target, f"{host_tree.root}/long")
    filler = Path(root) / "filler"
    with pytest.raises(OSError):
        filler.write_bytes(b"\0" * 65536 * 2)
    with pytest.raises(
        NamespaceError, match=r"^Unable to create symlink .*/long \(pointing to x+\)"
    ):
        ns.populate_in_namespace(holder.pid, [host_tree.node, f"{host_tree.root}/long"])
    # The node created before the failure was removed again.
    assert not os.path.lexists(root + host_tree.node[4:])


def test_run_in_namespace_returns_and_raises(holder_factory: list[Holder]) -> None:
    holder = _start_holder(ns.plan_private_dev(DEFAULT_CGROUP_DEVICE_ACL))
    holder_factory.append(holder)

    def listing() -> list[str]:
        return sorted(os.listdir("/dev"))

    assert ns.run_in_namespace(holder.pid, listing) == sorted(
        os.listdir(f"/proc/{holder.pid}/root/dev")
    )

    def fails() -> None:
        raise NamespaceError("Unable to remove device /dev/x: Device or resource busy", 16)

    with pytest.raises(NamespaceError, match="Device or resource busy") as info:
        ns.run_in_namespace(holder.pid, fails)
    assert info.value.errno == 16


def test_syscall_wrappers_raise_oserror() -> None:
    with pytest.raises(OSError) as info:
        ns.umount2("/nonexistent-svirt-path")
    assert info.value.errno == 2
    with pytest.raises(OSError):
        ns.setns(-1, ns.CLONE_NEWNS)
