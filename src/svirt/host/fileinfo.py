"""What ``svirt ls -Z`` shows of a file: its label, owner, mode, the remembered originals
(libvirt's ``trusted.libvirt.security.*``) and svirt's ACL references, stale ones marked."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

from svirt.errors import SvirtError
from svirt.host import selinux as host_selinux
from svirt.host.remembered import ACL_XATTR_PREFIX, DRIVERS, parse_acl_ref
from svirt.host.remembered import read_family as read_remembered

__all__ = ["FileLabels", "file_labels"]


@dataclass(frozen=True, slots=True)
class FileLabels:
    """One file as ``svirt ls -Z`` describes it (``to_dict`` is its ``--json`` form).

    ``remembered`` maps a driver (``selinux``, ``dac``) to the original it remembers:
    ``label``, ``refcount``, ``timestamp``, ``stale`` (not this boot). ``svirt_acl``:
    svirt's ACL references (``uid``, ``refcount``, ``replaced_entry``, ``replaced_mask``,
    ``stale``).
    """

    path: str
    label: str | None
    owner: str
    mode: str
    remembered: dict[str, dict[str, Any]] = field(default_factory=dict)
    svirt_acl: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "owner": self.owner,
            "mode": self.mode,
            "remembered": self.remembered,
            "svirt_acl": self.svirt_acl,
        }


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)


def file_labels(path: str) -> FileLabels:
    """The label, owner, mode and remembered state of ``path``; raises
    :class:`~svirt.errors.SvirtError` naming the path when it cannot be read."""
    try:
        st = os.stat(path)
        try:
            label = host_selinux.getfilecon(path)
            names = os.listxattr(path)
        except OSError as exc:
            if not _unsupported(exc):
                raise
            label, names = None, []  # a filesystem without xattrs: no label, nothing kept
        remembered: dict[str, dict[str, Any]] = {}
        acls = _acl_refs(path, names)
        for drv in DRIVERS:
            info = read_remembered(path, drv) if names else None
            if info is not None:
                remembered[drv] = {
                    "label": info.original,
                    "refcount": info.raw_refcount,
                    "timestamp": info.timestamp,
                    "stale": info.stale,
                }
    except OSError as exc:
        raise SvirtError(f"cannot access: {exc.strerror}", source=path) from None
    return FileLabels(
        path=path,
        label=label,
        owner=f"{st.st_uid}:{st.st_gid}",
        mode=f"{st.st_mode & 0o7777:04o}",
        remembered=remembered,
        svirt_acl=acls,
    )


def _acl_refs(path: str, names: list[str]) -> list[dict[str, Any]]:
    acls = []
    for name in names:
        uid = name[len(ACL_XATTR_PREFIX) :] if name.startswith(ACL_XATTR_PREFIX) else ""
        if not uid.isdigit():
            continue
        ref = parse_acl_ref(os.getxattr(path, name).decode("utf-8", "replace"))
        if ref is not None:
            acls.append(
                {
                    "uid": int(uid),
                    "refcount": str(ref.refcount),
                    "replaced_entry": "-" if ref.prev is None else str(ref.prev),
                    "replaced_mask": "-" if ref.mask is None else str(ref.mask),
                    "stale": not ref.this_boot,
                }
            )
    return acls
