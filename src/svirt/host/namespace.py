"""Mount namespaces and the per-VM private ``/dev`` (libvirt's ``qemu_namespace.c``).

Python 3.11 has no ``os.unshare``/``os.setns``, so the system calls are reached through
ctypes. Everything that changes a mount namespace runs in a *forked, single-threaded*
child: ``setns(CLONE_NEWNS)`` refuses a process whose filesystem context is shared with
other threads, and a namespace change must never leak into the caller.

The private ``/dev`` (libvirt-security-spec §10.2–§10.3) is built in two halves:

* :func:`plan_private_dev` runs in the host namespace and records, for every path the
  VM needs, what the host has there: node type, rdev, owner, mode, POSIX ACL, SELinux
  label, symlink targets (following chains). Planning in the parent keeps NSS, logging
  and error handling out of the child.
* :func:`build_private_dev` runs in the QEMU child before exec: it unshares a mount
  namespace, makes ``/`` recursively slave, mounts a 64 KiB tmpfs (source ``devfs``,
  ``nosuid``, ``mode=755``), recreates the planned nodes in it, moves the host's ``/dev``
  sub-mounts (``/dev/pts``, ``/dev/shm``, ...) into it, detaches the host ``/dev`` and
  moves the tmpfs onto ``/dev``. libvirt populates from the parent after the child
  exists; doing it in the child while the host ``/dev`` is still visible gives the same
  result without a parent/child handshake.

Hotplug (§10.4) uses :func:`populate_in_namespace` and :func:`remove_from_namespace`,
which ``setns`` into a running VM's namespace in a forked child. Bind mounts of
non-device files cross namespaces as detached mount trees (``open_tree`` +
``move_mount``), so they need no shared mount propagation on the host.

Error texts are libvirt's (spec §11 "Namespace"), with ``: <strerror>`` appended for
system errors as libvirt's ``virReportSystemError`` does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import errno
import functools
import os
import pickle
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from svirt.conf import DEFAULT_CGROUP_DEVICE_ACL
from svirt.domain.model import Domain
from svirt.domain.resources import domain_resources
from svirt.errors import LaunchError
from svirt.host import selinux
from svirt.host.ids import Gid, Pid, Uid

__all__ = [
    "CLONE_NEWNS",
    "DEV_TMPFS_OPTIONS",
    "MNT_DETACH",
    "MS_BIND",
    "MS_MOVE",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_REC",
    "MS_SLAVE",
    "SYMLOOP_MAX",
    "XATTR_POSIX_ACL_ACCESS",
    "DevNode",
    "DevPlan",
    "NamespaceError",
    "NodeKind",
    "build_private_dev",
    "collect_dev_nodes",
    "dev_submounts",
    "domain_dev_paths",
    "mknod",
    "mount",
    "mount_namespace_id",
    "plan_private_dev",
    "populate_in_namespace",
    "remove_from_namespace",
    "run_in_namespace",
    "setns",
    "umount2",
    "unshare",
]

CLONE_NEWNS = 0x00020000
MS_NOSUID = 0x2
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 0x2
SYMLOOP_MAX = 40
DEV_TMPFS_OPTIONS = "mode=755,size=65536"
XATTR_POSIX_ACL_ACCESS = "system.posix_acl_access"

# The new mount API has the same numbers on every architecture but alpha (Linux >= 5.2).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_OPEN_TREE_CLONE = 0x1
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4

# Label and ACL reads/writes that only say "this filesystem has no such thing".
_NO_XATTR_ERRNOS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA})

_T = TypeVar("_T")


class NamespaceError(LaunchError, OSError):
    """A mount-namespace or private ``/dev`` operation failed; carries the errno."""

    def __init__(self, message: str, errno_: int = 0) -> None:
        LaunchError.__init__(self, message)
        self.errno = errno_

    def __reduce__(self) -> tuple[type[NamespaceError], tuple[str, int]]:
        # Errors cross from forked children to the parent by pickle; OSError's own
        # reduce would drop the errno.
        return (type(self), (self.message, self.errno or 0))


def _system_error(text: str, exc: OSError) -> NamespaceError:
    reason = exc.strerror or os.strerror(exc.errno or 0)
    return NamespaceError(f"{text}: {reason}", exc.errno or 0)


# --- system calls ------------------------------------------------------------------------


def _load_libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.unshare.restype = ctypes.c_int
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.setns.restype = ctypes.c_int
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    libc.syscall.restype = ctypes.c_long
    return libc


_libc = _load_libc()


def _check(rc: int, path: str | None = None) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return rc


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    """``unshare(2)``; raises OSError."""
    _check(_libc.unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    """``setns(2)`` on a namespace file descriptor; raises OSError."""
    _check(_libc.setns(fd, nstype))


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """``mount(2)``; raises OSError naming the target."""
    rc = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(rc, os.fspath(target))


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    """``umount2(2)``; raises OSError naming the target."""
    _check(_libc.umount2(_b(target), flags), os.fspath(target))


def mknod(path: str | os.PathLike[str], mode: int, rdev: int) -> None:
    """Create a device node with exactly ``mode`` (the umask does not apply)."""
    os.mknod(path, mode, rdev)
    os.chmod(path, stat.S_IMODE(mode), follow_symlinks=False)


def _open_tree_clone(path: str) -> int:
    """A detached copy of the mount at ``path`` (bind-mount source usable in another
    namespace); returns an O_CLOEXEC file descriptor."""
    rc = _libc.syscall(
        _SYS_OPEN_TREE,
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC),
    )
    return _check(int(rc), path)


def _move_mount(tree_fd: int, target: str) -> None:
    rc = _libc.syscall(
        _SYS_MOVE_MOUNT,
        ctypes.c_int(tree_fd),
        ctypes.c_char_p(b""),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(target)),
        ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
    )
    _check(int(rc), target)


def mount_namespace_id(pid: int | str = "self") -> str:
    """The ``mnt:[inode]`` identity of a process's mount namespace."""
    return os.readlink(f"/proc/{pid}/ns/mnt")


# --- /dev sub-mounts ---------------------------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    # The kernel escapes space, tab, newline and backslash in mountinfo as \ooo.
    if "\\" not in field:
        return field
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and raw[i + 1 : i + 4].isdigit() and i + 3 < len(raw):
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def _is_under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def dev_submounts(mountinfo: str | os.PathLike[str] = "/proc/self/mountinfo") -> tuple[str, ...]:
    """The mounts under ``/dev`` that the private ``/dev`` keeps (moved, not copied).

    Nested mounts are pruned (``/dev/shm`` kept, ``/dev/shm/x`` dropped: it moves with its
    parent) and duplicates (over-mounts) dropped. Raises ``Unable to find any /dev
    mount`` when ``/dev`` itself is not a mount point.
    """
    try:
        text = Path(mountinfo).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise _system_error(f"Unable to read {os.fspath(mountinfo)}", exc) from None
    found_dev = False
    points: list[str] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape_mountinfo(fields[4])
        if point == "/dev":
            found_dev = True
        elif point.startswith("/dev/"):
            points.append(point)
    if not found_dev:
        raise NamespaceError("Unable to find any /dev mount")
    kept: list[str] = []
    for point in sorted(set(points)):
        if not any(_is_under(point, k) for k in kept):
            kept.append(point)
    return tuple(kept)


def filesystem_type(
    path: str, mountinfo: str | os.PathLike[str] = "/proc/self/mountinfo"
) -> str | None:
    """The type of the filesystem ``path`` lives on (the deepest mount containing it,
    the last one mounted there winning), or None when it cannot be told."""
    try:
        text = Path(mountinfo).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        point = _unescape_mountinfo(fields[4])
        fstype = line.split(" - ", 1)[1].split(" ", 1)[0]
        if _is_under(path, point) and (best is None or len(point) >= best[0]):
            best = (len(point), fstype)
    return best[1] if best is not None else None


# --- planning (host namespace) -----------------------------------------------------------


class NodeKind(enum.Enum):
    """What the private ``/dev`` holds for one path."""

    CHAR = "char"  # recreated with mknod
    BLOCK = "block"  # recreated with mknod
    SYMLINK = "symlink"  # recreated with the same target
    FILE = "file"  # regular file, FIFO or socket: bind-mounted over an empty file
    DIRECTORY = "directory"  # bind-mounted over an empty directory

    @property
    def is_bind(self) -> bool:
        return self in (NodeKind.FILE, NodeKind.DIRECTORY)


@dataclass(frozen=True, slots=True)
class DevNode:
    """The host's object at one ``/dev`` path, as the private ``/dev`` must reproduce it.

    ``acl`` is the raw ``system.posix_acl_access`` value and ``label`` the
    ``security.selinux`` value, both None when the host object has none. The remembered
    ``trusted.libvirt.security.*`` xattrs are never copied (spec §10.3).
    """

    path: str
    kind: NodeKind
    mode: int  # permission bits, S_IMODE
    uid: Uid
    gid: Gid
    rdev: int = 0
    target: str | None = None  # symlinks: the link text as stored
    acl: bytes | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class DevPlan:
    """Everything :func:`build_private_dev` needs, collected in the host namespace."""

    nodes: tuple[DevNode, ...]
    submounts: tuple[str, ...]


def _read_acl(path: str) -> bytes | None:
    try:
        return os.getxattr(path, XATTR_POSIX_ACL_ACCESS, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTR_ERRNOS:
            return None
        raise _system_error(f"Unable to get ACLs on {path}", exc) from None


def _read_label(path: str) -> str | None:
    try:
        return selinux.lgetfilecon(path)
    except OSError as exc:
        if exc.errno in _NO_XATTR_ERRNOS:
            return None
        raise _system_error(f"Unable to get SELinux label from {path}", exc) from None


def _node_kind(path: str, mode: int) -> NodeKind:
    if stat.S_ISCHR(mode):
        return NodeKind.CHAR
    if stat.S_ISBLK(mode):
        return NodeKind.BLOCK
    if stat.S_ISLNK(mode):
        return NodeKind.SYMLINK
    if stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return NodeKind.FILE
    if stat.S_ISDIR(mode):
        return NodeKind.DIRECTORY
    raise NamespaceError(f"unsupported device type {path} 0{stat.S_IFMT(mode):o}")


def collect_dev_nodes(
    paths: Iterable[str], *, submounts: Sequence[str] = ()
) -> tuple[DevNode, ...]:
    """Read the host objects behind ``paths`` (spec §10.3 "Paths collected" filtering).

    Only ``/dev/...`` paths count; paths inside a kept sub-mount and paths missing on
    the host are skipped. Symlinks are kept as links and their targets followed (a
    relative target resolves against the link's directory) up to ``SYMLOOP_MAX`` hops.
    Order is preserved and each path appears once.
    """
    nodes: dict[str, DevNode] = {}
    for requested in paths:
        current = os.path.normpath(requested)
        hops = 0
        while True:
            # A chain may leave /dev and come back (a disk path that is a link to
            # /dev/loop0): every hop is followed, and only the hops under /dev (outside
            # the kept sub-mounts) are reproduced in the private /dev.
            in_dev = current.startswith("/dev/") and not any(
                _is_under(current, m) for m in submounts
            )
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                break
            except OSError as exc:
                raise _system_error(f"Unable to access {current}", exc) from None
            if not stat.S_ISLNK(st.st_mode) and not in_dev:
                break
            kind = _node_kind(current, st.st_mode)
            target = None
            if kind is NodeKind.SYMLINK:
                try:
                    target = os.readlink(current)
                except OSError as exc:
                    raise NamespaceError(
                        f"failed to resolve symlink {current}: {exc.strerror}", exc.errno or 0
                    ) from None
            if in_dev and current not in nodes:
                nodes[current] = DevNode(
                    path=current,
                    kind=kind,
                    mode=stat.S_IMODE(st.st_mode),
                    uid=Uid(st.st_uid),
                    gid=Gid(st.st_gid),
                    rdev=st.st_rdev if kind in (NodeKind.CHAR, NodeKind.BLOCK) else 0,
                    target=target,
                    # ACLs cannot exist on symlinks; lgetxattr would read nothing useful.
                    acl=None if target is not None else _read_acl(current),
                    label=_read_label(current),
                )
            if target is None:
                break
            hops += 1
            if hops > SYMLOOP_MAX:
                raise NamespaceError(f"Too many levels of symbolic links: {requested}", errno.ELOOP)
            current = os.path.normpath(os.path.join(os.path.dirname(current), target))
    return tuple(nodes.values())


def plan_private_dev(
    paths: Iterable[str], *, mountinfo: str | os.PathLike[str] = "/proc/self/mountinfo"
) -> DevPlan:
    """Plan a private ``/dev`` holding ``paths`` (defaults and the domain's own paths),
    keeping the sub-mounts found in ``mountinfo``."""
    submounts = dev_submounts(mountinfo)
    return DevPlan(nodes=collect_dev_nodes(paths, submounts=submounts), submounts=submounts)


def domain_dev_paths(
    domain: Domain, default_devices: Iterable[str] = DEFAULT_CGROUP_DEVICE_ACL
) -> tuple[str, ...]:
    """The paths a domain's private ``/dev`` is built from: ``cgroup_device_acl`` first,
    then every resource path (disk chains, hostdevs with a known path, inputs, memory,
    TPM, chardevs, firmware, kernel...). Listening unix sockets are left out: QEMU
    creates them. Paths outside ``/dev`` are returned too; collection skips them."""
    paths = list(default_devices)
    for res in domain_resources(domain):
        if res.path is None or not res.local:
            continue
        if res.chardev_type == "unix" and res.chardev_mode == "bind":
            continue
        paths.append(res.path)
    loader = domain.os.loader
    if loader is not None:
        paths.append(loader.path)
    return tuple(dict.fromkeys(paths))


# --- creating nodes (inside the target namespace) ----------------------------------------


def _dest(root: str, path: str) -> str:
    return root + path[len("/dev") :]


def _make_parents(dest: str, root: str) -> None:
    parent = os.path.dirname(dest)
    missing: list[str] = []
    while parent != root and not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for d in reversed(missing):
        try:
            os.mkdir(d)
            # Parents of device nodes are plain 0755 directories whatever the umask.
            os.chmod(d, 0o755)
        except OSError as exc:
            raise _system_error(f"Failed to create {d}", exc) from None


def _copy_metadata(dest: str, node: DevNode) -> None:
    try:
        os.chown(dest, node.uid, node.gid, follow_symlinks=False)
    except OSError as exc:
        raise _system_error(f"Failed to chown device {node.path}", exc) from None
    if node.kind is not NodeKind.SYMLINK:
        try:
            os.chmod(dest, node.mode)
        except OSError as exc:
            raise _system_error(f"Failed to set permissions for device {node.path}", exc) from None
    if node.acl is not None:
        try:
            os.setxattr(dest, XATTR_POSIX_ACL_ACCESS, node.acl, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise _system_error(f"Unable to set ACLs on {node.path}", exc) from None
    if node.label is not None:
        try:
            selinux.setfilecon(dest, node.label, follow=False)
        except OSError as exc:
            if exc.errno not in _NO_XATTR_ERRNOS:
                raise _system_error(f"Unable to set SELinux label on {node.path}", exc) from None


def _unmount_if_mounted(dest: str, path: str) -> None:
    try:
        umount2(dest, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise _system_error(f"Unable to umount {path}", exc) from None


def _materialize(
    root: str,
    node: DevNode,
    bind: Callable[[str], None] | None = None,
) -> bool:
    """Create (or keep) ``node`` under ``root`` (the directory standing for /dev) and copy
    its metadata. ``bind`` mounts the host object onto the placeholder of a FILE or
    DIRECTORY node. Returns True when something new was created."""
    dest = _dest(root, node.path)
    _make_parents(dest, root)
    try:
        existing: os.stat_result | None = os.lstat(dest)
    except FileNotFoundError:
        existing = None
    created = False
    try:
        if node.kind in (NodeKind.CHAR, NodeKind.BLOCK):
            fmt = stat.S_IFCHR if node.kind is NodeKind.CHAR else stat.S_IFBLK
            if (
                existing is None
                or stat.S_IFMT(existing.st_mode) != fmt
                or existing.st_rdev != node.rdev
            ):
                try:
                    if existing is not None:
                        os.unlink(dest)
                    os.mknod(dest, fmt | node.mode, node.rdev)
                except OSError as exc:
                    raise _system_error(f"Unable to create device {node.path}", exc) from None
                created = True
        elif node.kind is NodeKind.SYMLINK:
            assert node.target is not None
            same = existing is not None and stat.S_ISLNK(existing.st_mode)
            if not same or os.readlink(dest) != node.target:
                if existing is not None:
                    try:
                        os.unlink(dest)
                    except OSError as exc:
                        raise _system_error(f"Unable to remove symlink {node.path}", exc) from None
                try:
                    os.symlink(node.target, dest)
                except OSError as exc:
                    raise _system_error(
                        f"Unable to create symlink {node.path} (pointing to {node.target})", exc
                    ) from None
                created = True
        else:
            if existing is not None:
                # Hotplug reuse: a previous bind mount may still sit on the target.
                _unmount_if_mounted(dest, node.path)
            if existing is None:
                try:
                    if node.kind is NodeKind.DIRECTORY:
                        os.mkdir(dest, 0o700)
                    else:
                        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                except OSError as exc:
                    raise _system_error(f"Failed to create {node.path}", exc) from None
                created = True
        _copy_metadata(dest, node)
        if node.kind.is_bind and bind is not None:
            bind(dest)
    except BaseException:
        if created:
            _remove(dest)
        raise
    return created


def _remove(dest: str) -> None:
    try:
        if os.path.isdir(dest) and not os.path.islink(dest):
            os.rmdir(dest)
        else:
            os.unlink(dest)
    except OSError:
        pass  # cleanup after an earlier failure, which is the error being reported


# --- building (in the QEMU child) --------------------------------------------------------


def _bind_host(source: str, dest: str) -> None:
    try:
        mount(source, dest, None, MS_BIND)
    except OSError as exc:
        raise _system_error(f"Failed to bind {source} on {dest}", exc) from None


def build_private_dev(plan: DevPlan, *, scratch: str = "/tmp") -> None:
    """Give the calling process a private ``/dev`` holding only ``plan``'s nodes.

    Call only in a forked, single-threaded child (it unshares the caller's mount
    namespace). ``scratch`` is any existing directory outside ``/dev``; the new tmpfs is
    mounted over it while being filled, inside the new namespace only, and the
    directory is uncovered again when the tmpfs moves onto ``/dev``. Nothing is created
    on the host's filesystems.
    """
    if _is_under(os.path.realpath(scratch), "/dev"):
        raise NamespaceError(f"Unable to use {scratch} to build /dev: it is under /dev")
    try:
        unshare(CLONE_NEWNS)
    except OSError as exc:
        raise _system_error("Unable to enable namespace: mount", exc) from None
    try:
        # Slave, not private: mounts made here never reach the host, while host mounts
        # still propagate in (where the host's mounts are shared).
        mount(None, "/", None, MS_SLAVE | MS_REC)
    except OSError as exc:
        raise _system_error("Failed to make root mount slave", exc) from None
    try:
        mount("devfs", scratch, "tmpfs", MS_NOSUID, DEV_TMPFS_OPTIONS)
    except OSError as exc:
        raise _system_error(f"Failed to mount devfs on {scratch} type tmpfs", exc) from None

    for node in plan.nodes:
        _materialize(scratch, node, functools.partial(_bind_host, node.path))

    for sub in plan.submounts:
        saved = _dest(scratch, sub)
        try:
            is_dir = stat.S_ISDIR(os.stat(sub).st_mode)
        except OSError as exc:
            raise _system_error(f"Unable to stat: {sub}", exc) from None
        try:
            os.makedirs(os.path.dirname(saved), exist_ok=True)
            if is_dir:
                os.mkdir(saved)
            else:
                os.close(os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise _system_error(f"Failed to create {sub}", exc) from None
        try:
            # Moving (not copying) keeps /dev/pts one devpts instance shared with the
            # host, so /dev/ptmx (5,2) in the new /dev still finds it at ./pts.
            mount(sub, saved, None, MS_MOVE)
        except OSError as exc:
            raise _system_error(f"Failed to move {sub} mount", exc) from None

    try:
        umount2("/dev", MNT_DETACH)
    except OSError as exc:
        raise _system_error("failed to umount devfs on /dev", exc) from None
    try:
        mount(scratch, "/dev", None, MS_MOVE)
    except OSError as exc:
        raise _system_error(f"Failed to mount {scratch} on /dev", exc) from None


# --- running code in another namespace ---------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _run_forked(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in a forked child and return its (picklable) result, or re-raise its
    error in the parent. The child never returns into the caller's stack."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            os.close(r)
            try:
                payload = pickle.dumps((True, fn()))
            except BaseException as exc:
                try:
                    payload = pickle.dumps((False, exc))
                except Exception:
                    payload = pickle.dumps((False, NamespaceError(f"{type(exc).__name__}: {exc}")))
            _write_all(w, payload)
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = _read_all(r)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not data:
        raise NamespaceError(f"namespace helper process {pid} died (wait status {status})")
    ok, value = pickle.loads(data)
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _enter_mount_namespace(pid: int) -> None:
    try:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _system_error(f"Unable to access /proc/{pid}/ns/mnt", exc) from None
    try:
        setns(fd, CLONE_NEWNS)
    except OSError as exc:
        raise _system_error(f"Unable to enter mount namespace of process {pid}", exc) from None
    finally:
        os.close(fd)


def _shares_our_namespace(pid: int) -> bool:
    try:
        return mount_namespace_id(pid) == mount_namespace_id()
    except OSError as exc:
        raise _system_error(f"Unable to access /proc/{pid}/ns/mnt", exc) from None


def run_in_namespace(pid: Pid | int, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in a forked child that has entered ``pid``'s mount namespace.

    ``fn``'s result must be picklable; its exception is re-raised here. ``fn`` runs
    after a fork, possibly of a threaded process: it must not take locks another thread
    may hold (logging, NSS lookups) and should only make system calls.
    """

    def child() -> _T:
        _enter_mount_namespace(pid)
        return fn()

    return _run_forked(child)


def populate_in_namespace(pid: Pid | int, paths: Iterable[str]) -> tuple[str, ...]:
    """Hotplug: make ``paths`` (and their symlink chains) exist in the running VM's
    private ``/dev``, with the host's owner, mode, ACL and label (spec §10.4).

    Paths inside the host's ``/dev`` sub-mounts are skipped: the VM shares those mounts.
    Returns the paths that were newly created, so the caller can undo them. On failure
    the nodes created by this call are removed again before the error is raised. A VM
    without a private ``/dev`` (it shares our mount namespace) sees the host's ``/dev``
    already: nothing is done and ``()`` is returned.
    """
    if _shares_our_namespace(pid):
        return ()
    nodes = collect_dev_nodes(paths, submounts=dev_submounts())
    if not nodes:
        return ()

    def child() -> tuple[str, ...]:
        # Detached clones are taken in the host namespace: a plain bind mount refuses a
        # source from another mount namespace, a detached tree can be attached anywhere.
        trees: dict[str, int] = {}
        for node in nodes:
            if node.kind.is_bind:
                try:
                    trees[node.path] = _open_tree_clone(node.path)
                except OSError as exc:
                    raise _system_error(f"Unable to access {node.path}", exc) from None
        _enter_mount_namespace(pid)
        created: list[str] = []
        try:
            for node in nodes:

                def attach(dest: str, fd: int | None = trees.get(node.path)) -> None:
                    assert fd is not None
                    try:
                        _move_mount(fd, dest)
                    except OSError as exc:
                        raise _system_error(f"Failed to bind {dest}", exc) from None

                if _materialize("/dev", node, attach if node.kind.is_bind else None):
                    created.append(node.path)
        except BaseException:
            for path in reversed(created):
                if path in trees:
                    _unmount_if_mounted(path, path)
                _remove(path)
            raise
        finally:
            for fd in trees.values():
                os.close(fd)
        return tuple(created)

    return _run_forked(child)


def remove_from_namespace(
    pid: Pid | int,
    paths: Iterable[str],
    *,
    keep: Iterable[str] = DEFAULT_CGROUP_DEVICE_ACL,
) -> tuple[str, ...]:
    """Hot-unplug: remove ``paths`` from the running VM's private ``/dev``.

    Skips paths outside ``/dev``, inside kept sub-mounts and in ``keep`` (the default
    devices, ``cgroup_device_acl``). A bind-mounted path is unmounted first. Only the
    paths themselves go, not the targets of symlinks (another device may use them).
    Returns the paths removed. A VM sharing our mount namespace is left alone (its
    ``/dev`` is the host's), returning ``()``.
    """
    if _shares_our_namespace(pid):
        return ()
    submounts = dev_submounts()
    kept = {os.path.normpath(k) for k in keep}
    targets = [
        p
        for p in dict.fromkeys(os.path.normpath(p) for p in paths)
        if p.startswith("/dev/") and p not in kept and not any(_is_under(p, m) for m in submounts)
    ]
    if not targets:
        return ()

    def child() -> tuple[str, ...]:
        _enter_mount_namespace(pid)
        removed: list[str] = []
        for path in targets:
            if not os.path.lexists(path):
                continue
            _unmount_if_mounted(path, path)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _system_error(f"Unable to remove device {path}", exc) from None
            removed.append(path)
        return tuple(removed)

    return _run_forked(child)
