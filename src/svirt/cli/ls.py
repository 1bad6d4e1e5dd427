"""``svirt ls -Z PATH...``: label, owner and remembered xattrs (stale ones marked)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from svirt import SvirtError, boot_time, file_labels

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


def describe(path: str) -> dict[str, Any]:
    return file_labels(path).to_dict()


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
