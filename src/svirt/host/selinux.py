"""libselinux, where the host has it; the ``security.selinux`` xattr where it does not.

This is the only module that imports the ``selinux`` binding (Debian's python3-selinux).
File labels are the ``security.selinux`` xattr, so they can be read and written for real
even on a kernel with SELinux off. Process labels cannot be set there; callers ask
:func:`is_enabled` and record the intended label instead.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from types import ModuleType
from typing import cast

__all__ = [
    "XATTR_SELINUX",
    "available",
    "boolean_active",
    "fgetfilecon",
    "fsetfilecon",
    "getcon",
    "getenforce",
    "getfilecon",
    "getpidcon",
    "is_enabled",
    "lgetfilecon",
    "lookup_default_label",
    "selinux_root",
    "set_exec_context",
    "setfilecon",
    "virtual_domain_context_path",
    "virtual_image_context_path",
]

XATTR_SELINUX = "security.selinux"


@functools.cache
def _binding() -> ModuleType | None:
    try:
        import selinux
    except ImportError:
        return None
    return cast(ModuleType, selinux)


def available() -> bool:
    """True when the libselinux binding imports."""
    return _binding() is not None


@functools.cache
def is_enabled() -> bool:
    """SELinux is active in the kernel (``is_selinux_enabled() > 0``)."""
    mod = _binding()
    if mod is not None:
        return bool(mod.is_selinux_enabled() > 0)
    return Path("/sys/fs/selinux/enforce").exists()


def getenforce() -> bool:
    """True when enforcing. False when permissive or disabled."""
    if not is_enabled():
        return False
    mod = _binding()
    if mod is not None:
        return bool(mod.security_getenforce() == 1)
    return Path("/sys/fs/selinux/enforce").read_text().strip() == "1"


def boolean_active(name: str) -> bool:
    """The current value of a policy boolean; OSError where SELinux is not active."""
    mod = _binding()
    if mod is None or not is_enabled():
        raise OSError(errno.ENOENT, "SELinux is not enabled")
    value = mod.security_get_boolean_active(name)
    if value < 0:
        raise OSError(errno.ENOENT, f"no boolean {name}")
    return bool(value)


def active_booleans() -> dict[str, bool]:
    """Every boolean's current value in the running kernel (``setsebool`` without
    ``-P`` changes only these); empty where SELinux is not active."""
    root = Path("/sys/fs/selinux/booleans")
    if not is_enabled() or not root.is_dir():
        return {}
    out: dict[str, bool] = {}
    for entry in root.iterdir():
        try:
            out[entry.name] = entry.read_text().split()[0] == "1"
        except (OSError, IndexError):
            continue
    return out


def getcon() -> str:
    """The calling process's raw context. Raises OSError where SELinux is off."""
    mod = _binding()
    if mod is not None:
        return str(mod.getcon_raw()[1])
    return Path("/proc/self/attr/current").read_text().rstrip("\0\n")


def getpidcon(pid: int) -> str:
    mod = _binding()
    if mod is not None:
        return str(mod.getpidcon_raw(pid)[1])
    return Path(f"/proc/{pid}/attr/current").read_text().rstrip("\0\n")


def set_exec_context(context: str | None) -> None:
    """``setexeccon_raw`` for the next exec of this process (call in the child)."""
    mod = _binding()
    if mod is not None:
        mod.setexeccon_raw(context)
        return
    with open("/proc/thread-self/attr/exec", "w") as fh:
        fh.write(context or "")


def set_socket_create_context(context: str | None) -> None:
    """``setsockcreatecon_raw`` for the sockets this thread creates next (None: reset).

    libvirt creates the monitor socket it hands to QEMU with the VM's label
    (``virSecurityManagerSetSocketLabel``): a socket left in the daemon's own domain is
    one the VM's process may not even ``getattr``, and QEMU refuses the descriptor."""
    mod = _binding()
    if mod is not None:
        mod.setsockcreatecon_raw(context)
        return
    with open("/proc/thread-self/attr/sockcreate", "w") as fh:
        fh.write(context or "")


def daemon_socket_context(vm_label: str) -> str | None:
    """The context a daemon's client socket to a VM's monitor needs: the daemon's own
    user, role and type at the VM's level (libvirt's ``SetDaemonSocketLabel``). The
    server end QEMU accepts takes the client's level; at the daemon's range the VM's
    QEMU may neither read nor write it (MCS). None where SELinux is off or the label
    has no level."""
    if not is_enabled():
        return None
    parts = vm_label.split(":", 3)
    if len(parts) < 4:
        return None
    own = getcon().split(":", 3)
    return ":".join([*own[:3], parts[3]])


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def getfilecon(path: str | os.PathLike[str]) -> str | None:
    """The file's label following symlinks; None when it has none (ENODATA)."""
    try:
        return _decode(os.getxattr(path, XATTR_SELINUX))
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


def lgetfilecon(path: str | os.PathLike[str]) -> str | None:
    try:
        return _decode(os.getxattr(path, XATTR_SELINUX, follow_symlinks=False))
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


def fgetfilecon(fd: int) -> str | None:
    try:
        return _decode(os.getxattr(fd, XATTR_SELINUX))
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


def setfilecon(path: str | os.PathLike[str], context: str, *, follow: bool = True) -> None:
    # The kernel stores the label with a trailing NUL, as libselinux writes it.
    os.setxattr(path, XATTR_SELINUX, context.encode() + b"\0", follow_symlinks=follow)


def fsetfilecon(fd: int, context: str) -> None:
    os.setxattr(fd, XATTR_SELINUX, context.encode() + b"\0")


@functools.cache
def selinux_root() -> Path:
    mod = _binding()
    if mod is not None:
        return Path(str(mod.selinux_path()))
    return Path("/etc/selinux/default")


def virtual_domain_context_path() -> Path:
    mod = _binding()
    if mod is not None:
        return Path(str(mod.selinux_virtual_domain_context_path()))
    return selinux_root() / "contexts" / "virtual_domain_context"


def virtual_image_context_path() -> Path:
    mod = _binding()
    if mod is not None:
        return Path(str(mod.selinux_virtual_image_context_path()))
    return selinux_root() / "contexts" / "virtual_image_context"


def lookup_default_label(path: str, mode: int) -> str | None:
    """The file-contexts default label for a path and mode (``matchpathcon``); None when
    the database has no entry or cannot be read."""
    mod = _binding()
    if mod is None:
        return None
    try:
        rc, con = mod.matchpathcon(path, mode)
    except OSError:
        return None
    return str(con) if rc == 0 and con and con != "<<none>>" else None
