"""POSIX access ACLs through the ``system.posix_acl_access`` xattr, and access checks.

The xattr is a little-endian header (version 2) followed by ``(tag u16, perm u16, id u32)``
entries. A file without the xattr has the minimal ACL its mode bits describe; writing
an ACL that is equivalent to the mode makes the kernel drop the xattr and update the
mode, which is how a named entry is removed without a trace.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

__all__ = [
    "ACL_XATTR",
    "Acl",
    "AclEntry",
    "can_access",
    "read_acl",
    "write_acl",
]

ACL_XATTR = "system.posix_acl_access"
_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_ORDER = {USER_OBJ: 0, USER: 1, GROUP_OBJ: 2, GROUP: 3, MASK: 4, OTHER: 5}
R, W, X = 4, 2, 1


@dataclass(frozen=True, slots=True)
class AclEntry:
    tag: int
    perm: int
    id: int = _NO_ID


@dataclass(frozen=True, slots=True)
class Acl:
    entries: tuple[AclEntry, ...]

    @classmethod
    def from_mode(cls, mode: int) -> Acl:
        return cls(
            (
                AclEntry(USER_OBJ, (mode >> 6) & 7),
                AclEntry(GROUP_OBJ, (mode >> 3) & 7),
                AclEntry(OTHER, mode & 7),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Acl:
        if len(data) < 4 or (len(data) - 4) % 8 or struct.unpack_from("<I", data)[0] != _VERSION:
            raise ValueError("malformed POSIX ACL xattr")
        entries = tuple(
            AclEntry(*struct.unpack_from("<HHI", data, off)) for off in range(4, len(data), 8)
        )
        return cls(entries)

    def encode(self) -> bytes:
        entries = sorted(self.entries, key=lambda e: (_ORDER[e.tag], e.id))
        return struct.pack("<I", _VERSION) + b"".join(
            struct.pack("<HHI", e.tag, e.perm, e.id) for e in entries
        )

    def get(self, tag: int, id_: int = _NO_ID) -> AclEntry | None:
        for e in self.entries:
            if e.tag == tag and (tag not in (USER, GROUP) or e.id == id_):
                return e
        return None

    def named_user(self, uid: int) -> AclEntry | None:
        return self.get(USER, uid)

    def with_named_user(self, uid: int, perm: int | None) -> Acl:
        """Set (perm) or remove (None) the named-user entry; the mask is recomputed as the
        union of the group class, as ``setfacl`` does."""
        entries = [e for e in self.entries if not (e.tag == USER and e.id == uid)]
        if perm is not None:
            entries.append(AclEntry(USER, perm, uid))
        return Acl(tuple(entries)).with_mask()

    def with_mask(self, mask: int | None = None) -> Acl:
        """Recompute (or set) the mask; drop it when no named entries remain."""
        base = [e for e in self.entries if e.tag != MASK]
        named = [e for e in base if e.tag in (USER, GROUP)]
        if not named and mask is None:
            return Acl(tuple(base))
        if mask is None:
            mask = 0
            for e in base:
                if e.tag in (USER, GROUP, GROUP_OBJ):
                    mask |= e.perm
        return Acl((*base, AclEntry(MASK, mask)))

    @property
    def minimal(self) -> bool:
        return all(e.tag in (USER_OBJ, GROUP_OBJ, OTHER) for e in self.entries)


def read_acl(path: str) -> tuple[Acl, bool]:
    """The file's access ACL and whether it is stored as an xattr (False: from the mode)."""
    try:
        return Acl.decode(os.getxattr(path, ACL_XATTR)), True
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
    return Acl.from_mode(os.stat(path).st_mode), False


def write_acl(path: str, acl: Acl) -> None:
    """Write the ACL. A minimal ACL is written too: the kernel folds it into the mode."""
    os.setxattr(path, ACL_XATTR, acl.encode())


def can_access(st: os.stat_result, acl: Acl, uid: int, gids: frozenset[int], need: int) -> bool:
    """POSIX.1e access check for ``uid`` (with groups ``gids``) wanting ``need`` bits."""
    if uid == 0:
        # root bypasses DAC except execute without any x bit; svirt never asks for x on
        # regular files, and directories are always searchable by root.
        return True
    if uid == st.st_uid:
        e = acl.get(USER_OBJ)
        return e is not None and e.perm & need == need
    mask_e = acl.get(MASK)
    mask = mask_e.perm if mask_e is not None else 7
    named = acl.named_user(uid)
    if named is not None:
        return named.perm & mask & need == need
    group_perms = []
    if st.st_gid in gids:
        g = acl.get(GROUP_OBJ)
        if g is not None:
            group_perms.append(g.perm)
    group_perms.extend(e.perm for e in acl.entries if e.tag == GROUP and e.id in gids)
    if group_perms:
        return any(p & mask & need == need for p in group_perms)
    other = acl.get(OTHER)
    return other is not None and other.perm & need == need


def is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)
