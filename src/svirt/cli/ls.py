"""``svirt ls -Z PATH...``: label, owner and remembered xattrs (stale ones marked)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any

from svirt.errors import SvirtError
from svirt.host import selinux as host_selinux
from svirt.host.remembered import (
    ACL_XATTR_PREFIX,
    DRIVERS,
    boot_time,
    parse_acl_ref,
)
from svirt.host.remembered import read_family as read_remembered

from .output import print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "ls", parents=[common], help="show labels, owners and remembered xattrs of files"
    )
    p.add_argument(
        "-Z",
        "--context",
        action="store_true",
        default=True,
        help="show security contexts (the default)",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or devices to show")
    p.set_defaults(func=run)


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)


def describe(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
        try:
            label = host_selinux.getfilecon(path)
            names = os.listxattr(path)
        except OSError as exc:
            if not _unsupported(exc):
                raise
            label, names = None, []  # a filesystem without xattrs: no label, nothing kept
        entry: dict[str, Any] = {
            "path": path,
            "label": label,
            "owner": f"{st.st_uid}:{st.st_gid}",
            "mode": f"{st.st_mode & 0o7777:04o}",
            "remembered": {},
            "svirt_acl": _acl_refs(path, names),
        }
        for drv in DRIVERS:
            info = read_remembered(path, drv) if names else None
            if info is not None:
                entry["remembered"][drv] = {
                    "label": info.original,
                    "refcount": info.raw_refcount,
                    "timestamp": info.timestamp,
                    "stale": info.stale,
                }
    except OSError as exc:
        raise SvirtError(f"cannot access: {exc.strerror}", source=path) from None
    return entry


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


def run(args: argparse.Namespace) -> int:
    entries = []
    failed = False
    for path in args.paths:
        try:
            entries.append(describe(path))
        except SvirtError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    if args.json:
        print_json(entries)
        return 1 if failed else 0
    for e in entries:
        print(f"{e['label'] or '(no label)'} {e['owner']} {e['mode']} {e['path']}")
        for drv, r in e["remembered"].items():
            note = (
                f"STALE: timestamp {r['timestamp']} is not this boot ({boot_time()})"
                if r["stale"]
                else "this boot"
            )
            print(f"    remembered {drv}: {r['label']} refcount={r['refcount']} ({note})")
        for a in e["svirt_acl"]:
            stale = "STALE: from an earlier boot" if a["stale"] else "this boot"
            print(
                f"    svirt ACL entry: user:{a['uid']} refcount={a['refcount']} replaced "
                f"entry={a['replaced_entry']} mask={a['replaced_mask']} ({stale})"
            )
    return 1 if failed else 0
