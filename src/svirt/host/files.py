"""Snapshots of the security state of one file, for the intent journal.

A snapshot holds everything svirt may change on a file: its SELinux label, owner, POSIX
ACL and the remembered-label xattrs. Restoring a snapshot puts exactly that state back.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Any

__all__ = ["FileState", "restore_state", "snapshot"]

_TRACKED_PREFIXES = ("trusted.libvirt.security.", "trusted.svirt.security.")
_TRACKED_NAMES = ("security.selinux", "system.posix_acl_access", "system.posix_acl_default")


@dataclass(frozen=True, slots=True)
class FileState:
    dev: int
    ino: int
    uid: int
    gid: int
    mode: int  # permission bits (an ACL change rewrites the group bits); -1: not known
    xattrs: tuple[tuple[str, bytes], ...]  # tracked xattrs, sorted by name

    def to_json(self) -> dict[str, Any]:
        return {
            "dev": self.dev,
            "ino": self.ino,
            "uid": self.uid,
            "gid": self.gid,
            "mode": self.mode,
            "xattrs": {k: v.hex() for k, v in self.xattrs},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileState:
        return cls(
            int(data["dev"]),
            int(data["ino"]),
            int(data["uid"]),
            int(data["gid"]),
            int(data.get("mode", -1)),
            tuple(sorted((k, bytes.fromhex(v)) for k, v in data["xattrs"].items())),
        )


def _tracked(name: str) -> bool:
    return name in _TRACKED_NAMES or name.startswith(_TRACKED_PREFIXES)


def snapshot(path: str) -> FileState:
    """The file's current security state (following symlinks, as labelling does)."""
    st = os.stat(path)
    values: list[tuple[str, bytes]] = []
    try:
        names = os.listxattr(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        names = []
    for name in sorted(names):
        if _tracked(name):
            try:
                values.append((name, os.getxattr(path, name)))
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    raise
    return FileState(
        st.st_dev, st.st_ino, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), tuple(values)
    )


def restore_state(path: str, state: FileState) -> None:
    """Put the tracked xattrs, the owner and the mode back exactly as in ``state``."""
    current = dict(snapshot(path).xattrs)
    wanted = dict(state.xattrs)
    for name in current.keys() - wanted.keys():
        try:
            os.removexattr(path, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
    for name, value in wanted.items():
        if current.get(name) != value:
            os.setxattr(path, name, value)
    st = os.stat(path)
    if (st.st_uid, st.st_gid) != (state.uid, state.gid):
        os.chown(path, state.uid, state.gid)
    if state.mode >= 0 and stat.S_IMODE(os.stat(path).st_mode) != state.mode:
        os.chmod(path, state.mode)
    # chown clears set-id bits and chmod rewrites the ACL mask: put the ACL back last.
    acl = wanted.get("system.posix_acl_access")
    if acl is not None and os.getxattr(path, "system.posix_acl_access") != acl:
        os.setxattr(path, "system.posix_acl_access", acl)
