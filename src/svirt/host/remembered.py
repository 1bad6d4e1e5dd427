"""The one codec of remembered state on a file (issue 12): libvirt's
``trusted.libvirt.security.{<drv>,ref_<drv>,timestamp_<drv>}`` (byte-compatible with
libvirt 9, spec §7) and svirt's ACL references ``trusted.svirt.security.acl_<uid>``
(``"<refcount> <replaced entry perm|-> <replaced mask|-> <boot time>"``).

Every reader (the drivers through :mod:`svirt.security.remember`, ``doctor``,
``recover``, ``ls -Z``, ``audit explain``) decodes through here, so they agree on what a
file remembers, on what is malformed and on what is from this boot. Reading never
changes anything; the drivers' counting (``remember``/``recall``) stays in
:mod:`svirt.security.remember` and writes the same names.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ACL_XATTR_PREFIX",
    "DRIVERS",
    "XATTR_PREFIX",
    "AclRef",
    "Remembered",
    "boot_time",
    "format_acl_ref",
    "get_xattr",
    "has_remembered",
    "is_this_boot",
    "parse_acl_ref",
    "read_all",
    "read_family",
    "xattr_names",
]

XATTR_PREFIX: Final = "trusted.libvirt.security."
ACL_XATTR_PREFIX: Final = "trusted.svirt.security.acl_"
DRIVERS: Final = ("selinux", "dac")
UNSUPPORTED: Final = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)
_TIMESTAMP = re.compile(r"^(?:[0-9a-fA-F-]{36}-)?([0-9]+)$")


def xattr_names(driver: str) -> tuple[str, str, str]:
    """(label, ref, timestamp) xattr names for a driver."""
    return (
        f"{XATTR_PREFIX}{driver}",
        f"{XATTR_PREFIX}ref_{driver}",
        f"{XATTR_PREFIX}timestamp_{driver}",
    )


class BootTimeError(OSError):
    pass


@functools.cache
def boot_time() -> int:
    """The host boot time in Unix seconds: ``btime`` of /proc/stat, as libvirt 9 writes."""
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    raise BootTimeError("Unable to get host boot time")


def is_this_boot(value: str) -> bool:
    """libvirt 9 writes the boot time alone; the 5.x era wrote ``<host-uuid>-<boot>``.
    Where utmp lacks a boot record libvirt derives it from /proc/uptime, which can differ
    from ``btime`` by a second; both forms and that jitter count as this boot."""
    m = _TIMESTAMP.match(value.strip())
    return m is not None and abs(int(m.group(1)) - boot_time()) <= 1


def get_xattr(path: str, name: str) -> str | None:
    """An xattr's value as text, None when absent. Unsupported filesystems raise."""
    try:
        return os.getxattr(path, name).decode("utf-8", "replace")
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


@dataclass(frozen=True, slots=True)
class AclRef:
    """svirt's ACL reference on a file."""

    refcount: int
    prev: int | None  # the named entry's perm this grant replaced (None: there was none)
    mask: int | None  # the mask it replaced (None: the ACL had none)
    timestamp: str

    @property
    def this_boot(self) -> bool:
        return is_this_boot(self.timestamp)


def parse_acl_ref(raw: str) -> AclRef | None:
    """The reference, or None when the value is malformed."""
    parts = raw.split()
    if (
        len(parts) != 4
        or not parts[0].isdigit()
        or not all(p == "-" or p.isdigit() for p in parts[1:3])
    ):
        return None

    def perm(text: str) -> int | None:
        return None if text == "-" else int(text)

    return AclRef(int(parts[0]), perm(parts[1]), perm(parts[2]), parts[3])


def format_acl_ref(ref: int, prev: int | None, mask: int | None) -> str:
    p = "-" if prev is None else str(prev)
    m = "-" if mask is None else str(mask)
    return f"{ref} {p} {m} {boot_time()}"


@dataclass(frozen=True, slots=True)
class Remembered:
    """One family of remembered xattrs on one file, as found.

    ``family`` is ``selinux`` or ``dac`` (libvirt's names) or ``acl_<uid>`` (svirt's ACL
    reference). ``original`` is the remembered label, ``+uid:+gid`` owner, or for ACLs
    the replaced entry and mask as ``prev mask``; ``raw_refcount`` is the count as
    written, ``refcount`` the same parsed (None when malformed or absent).
    """

    family: str
    names: tuple[str, ...]  # the xattrs present
    original: str | None
    refcount: int | None
    raw_refcount: str | None
    timestamp: str | None
    this_boot: bool
    uid: int | None = None  # acl_<uid>

    @property
    def malformed(self) -> bool:
        return self.raw_refcount is not None and self.refcount is None

    @property
    def stale(self) -> bool:
        """libvirt would discard this state: no valid timestamp from this boot."""
        return not self.this_boot


def read_family(path: str, driver: str) -> Remembered | None:
    """libvirt's remembered state of one driver on ``path``; None when it has none or
    the filesystem has no xattrs."""
    names = xattr_names(driver)
    try:
        values = [get_xattr(path, n) for n in names]
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            return None
        raise
    if all(v is None for v in values):
        return None
    label, ref, ts = values
    return Remembered(
        driver,
        tuple(n for n, v in zip(names, values, strict=True) if v is not None),
        label,
        int(ref) if ref is not None and ref.isdigit() else None,
        ref,
        ts,
        ts is not None and is_this_boot(ts),
    )


def _acl_family(path: str, name: str) -> Remembered | None:
    suffix = name[len(ACL_XATTR_PREFIX) :]
    raw = get_xattr(path, name)
    if raw is None or not suffix.isdigit():
        return None
    ref = parse_acl_ref(raw)
    parts = raw.split()
    return Remembered(
        f"acl_{suffix}",
        (name,),
        f"{parts[1]} {parts[2]}" if ref is not None else None,
        ref.refcount if ref is not None else None,
        parts[0] if parts else raw,
        ref.timestamp if ref is not None else None,
        ref is not None and ref.this_boot,
        int(suffix),
    )


def read_all(path: str) -> list[Remembered]:
    """Every remembered family on ``path``: libvirt's drivers, then svirt's ACL
    references by uid."""
    out = [r for r in (read_family(path, d) for d in DRIVERS) if r is not None]
    try:
        all_names = os.listxattr(path)
    except OSError:
        all_names = []
    for name in sorted(all_names):
        if name.startswith(ACL_XATTR_PREFIX):
            try:
                r = _acl_family(path, name)
            except OSError as exc:
                if exc.errno in UNSUPPORTED:
                    continue
                raise
            if r is not None:
                out.append(r)
    return out


def has_remembered(path: str) -> bool:
    """Whether ``path`` itself (not following a symlink) carries any remembered xattr."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False
    return any(n.startswith((XATTR_PREFIX, ACL_XATTR_PREFIX)) for n in names)
