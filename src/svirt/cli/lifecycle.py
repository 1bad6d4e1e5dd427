"""``svirt start/stop/list/dumpxml/attach-disk/detach-disk``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from svirt import Domain, Host

from .output import print_json, print_outcomes, table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("start", parents=[common], help="start a domain confined by sVirt")
    p.add_argument("xml", metavar="DOMAIN.xml", help="domain XML file (libvirt's format)")
    p.set_defaults(func=run_start)
    p = sub.add_parser(
        "stop", parents=[common], help="stop a domain and restore every label and owner"
    )
    p.add_argument("name", metavar="NAME", help="domain name")
    p.add_argument(
        "--force", action="store_true", help="do not ask the guest to power down: quit QEMU at once"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for the guest to power down (default 10)",
    )
    p.set_defaults(func=run_stop)
    p = sub.add_parser(
        "list",
        parents=[common],
        help="list running and labelled domains with their pids and labels (like ps -eZ)",
    )
    p.add_argument("-Z", "--context", action="store_true", help="show security labels")
    p.set_defaults(func=run_list)
    p = sub.add_parser(
        "dumpxml", parents=[common], help="print a domain's live XML with its generated seclabels"
    )
    p.add_argument("name", metavar="NAME", help="domain name")
    p.set_defaults(func=run_dumpxml)
    p = sub.add_parser(
        "attach-disk", parents=[common], help="label a disk and hotplug it into a running domain"
    )
    p.add_argument("name", metavar="NAME", help="domain name")
    p.add_argument("xml", metavar="DISK.xml", help="file with one <disk> element")
    p.set_defaults(func=run_attach)
    p = sub.add_parser(
        "detach-disk", parents=[common], help="hot-unplug a disk and restore its labels"
    )
    p.add_argument("name", metavar="NAME", help="domain name")
    p.add_argument("target", metavar="TARGET", help="the disk's target (vdb)")
    p.set_defaults(func=run_detach)


def run_start(args: argparse.Namespace) -> int:
    res = Host(args.config).start(args.xml).started
    assert res is not None  # a handle from Host.start carries its report
    if args.json:
        print_json(
            {
                "name": res.name,
                "pid": res.pid,
                "label": res.label,
                "imagelabel": res.imagelabel,
                "imagelabel_status": res.imagelabel_status,
                "enforced": res.enforced,
                "notes": list(res.notes),
                "seconds": round(res.seconds, 3),
                "warnings": list(res.warnings),
                "outcomes": [o.to_json() for o in res.outcomes],
            }
        )
        return 0
    print(f"Domain '{res.name}' started (pid {res.pid}, {res.seconds:.2f} s)")
    if res.label:
        note = "" if res.enforced else " (recorded, not enforced: SELinux is off here)"
        print(f"  process label {res.label}{note}")
        print(f"  image label   {res.imagelabel_status}")
    print_outcomes(res.outcomes)
    for n in res.notes:
        print(f"  note: {n}")
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def run_stop(args: argparse.Namespace) -> int:
    def progress(text: str) -> None:
        print(f"svirt: {text}", file=sys.stderr, flush=True)

    domain = Domain(Host(args.config), args.name)
    res = domain.stop(force=args.force, timeout=args.timeout, progress=progress)
    for text in res.reinstated:
        print(f"warning: {text}; put back from that copy", file=sys.stderr)
    for text in res.notes:
        print(f"note: {text}", file=sys.stderr)
    if args.json:
        print_json(
            {
                "name": res.name,
                "stopped": res.how,
                "summary": res.summary,
                "outcomes": [o.to_json() for o in res.outcomes],
                "warnings": res.reinstated,
                "notes": res.notes,
            }
        )
    else:
        print(f"Domain '{args.name}' stopped ({res.how}): {res.summary}")
        print_outcomes(res.outcomes)
    return 0


def run_list(args: argparse.Namespace) -> int:
    entries = [status.to_dict() for status in Host(args.config).listing()]
    if args.json:
        print_json(entries)
        return 0
    rows: list[list[str]] = []
    for e in entries:
        row = [str(e["id"] or "-"), str(e["name"]), str(e["state"]), str(e["pid"] or "-")]
        if args.context:
            row += [str(e["label"] or "-"), str(e["imagelabel"] or "-")]
        rows.append(row)
    header = ["ID", "NAME", "STATE", "PID"] + (["LABEL", "IMAGELABEL"] if args.context else [])
    print(table(rows, header))
    if args.context and entries and not entries[0]["enforced"]:
        print("(process labels are recorded, not enforced: SELinux is off on this host)")
    return 0


def run_dumpxml(args: argparse.Namespace) -> int:
    print(Host(args.config).domain(args.name).xml, end="")
    return 0


def run_attach(args: argparse.Namespace) -> int:
    res = Domain(Host(args.config), args.name).attach_disk(args.xml)
    disk = next((d.target for d in reversed(res.domain.disks)), "?")
    _hotplug(args, f"Disk {disk} attached to '{args.name}'", res)
    return 0


def run_detach(args: argparse.Namespace) -> int:
    res = Domain(Host(args.config), args.name).detach_disk(args.target)
    _hotplug(args, f"Disk {args.target} detached from '{args.name}'", res)
    return 0


def _hotplug(args: argparse.Namespace, head: str, res: Any) -> None:
    if args.json:
        print_json(
            {
                "name": args.name,
                "summary": res.summary,
                "outcomes": [o.to_json() for o in res.outcomes],
            }
        )
        return
    print(f"{head}: {res.summary}")
    print_outcomes(res.outcomes)
