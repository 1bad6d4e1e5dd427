"""``svirt doctor [NAME|PATH...]`` and ``svirt recover [PATH...] [--apply]``.

``doctor`` exits 1 when it has findings. ``recover`` is a dry run unless ``--apply``;
it exits 1 when a repair failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from svirt import DoctorReport, Host, RecoverReport

from .output import print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="find stale remembered xattrs, refcount drift, orphan labels, category clashes",
        description=(
            "Check files for stale sVirt state, deciding from live facts: which domains list "
            "a file and which processes hold it open. With no argument: every svirt and "
            "libvirt domain's resources, the images directories of svirt.conf, and every "
            "VM's private /dev. Exit 1 when there are findings."
        ),
    )
    p.add_argument("targets", nargs="*", metavar="NAME|PATH", help="domain names or paths")
    p.set_defaults(func=run_doctor)
    p = sub.add_parser(
        "recover",
        parents=[common],
        help="repair what doctor finds (dry run unless --apply)",
        description=(
            "Roll back interrupted labelling transactions, restore the labels of domains whose "
            "monitor and QEMU died, then repair each file: where nothing uses it, put the "
            "remembered label, owner and ACL back and remove the xattrs; where something "
            "does, correct the reference count. A running VM's file relabelled behind its "
            "back gets the VM's own label again; a record whose files are all gone is "
            "forgotten (its MCS pair released). Prints what it would do unless --apply."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files (default: as doctor)")
    p.add_argument("--apply", action="store_true", help="make the changes")
    p.add_argument(
        "--take-from-libvirt",
        action="store_true",
        help="also repair files of a libvirt domain whose QEMU died but whose status XML "
        "is kept (libvirtd restores them itself when it restarts: use only if it never will)",
    )
    p.set_defaults(func=run_recover)


def _print_doctor(report: DoctorReport) -> None:
    by_path: dict[str | None, list[Any]] = {}
    for f in report.findings:
        by_path.setdefault(f.path, []).append(f)
    facts = {f.path: f for f in report.files}
    for path, findings in by_path.items():
        if path is None:
            continue
        info = facts.get(path)
        head = (
            path if info is None else f"{path}  {info.label or '(no label)'}  {info.uid}:{info.gid}"
        )
        print(head)
        for f in findings:
            print(f"  [{f.kind.value}] {f.evidence}")
            print(f"      fix: {f.fix}")
            if f.manual:
                print(f"      by hand: {f.manual}")
    host = by_path.get(None, [])
    if host:
        print("domains:")
        for f in host:
            print(f"  [{f.kind.value}] {f.evidence}")
            print(f"      fix: {f.fix}")
            if f.manual:
                print(f"      {f.manual}")
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    n = len(report.findings)
    print(
        f"{n} finding{'s' if n != 1 else ''} in {len(report.files)} file"
        f"{'s' if len(report.files) != 1 else ''} checked ({len(report.domains)} domain"
        f"{'s' if len(report.domains) != 1 else ''}, {report.processes} processes, boot time "
        f"{report.boot_time})"
    )


def run_doctor(args: argparse.Namespace) -> int:
    report = Host(args.config).doctor(*args.targets)
    if args.json:
        print_json(report.to_dict())
    else:
        _print_doctor(report)
    return 1 if report.findings else 0


def _print_recover(report: RecoverReport) -> None:
    for a in report.actions:
        where = f"{a.path}: " if a.path else ""
        if a.error:
            print(f"FAILED {a.what}: {where}{a.description}: {a.error}")
        elif a.what == "manual":
            print(f"not repaired (needs a decision): {where}{a.description}")
        elif a.done:
            print(f"{a.what}: {where}{a.description}")
        else:
            print(f"would {a.what}: {where}{a.description}")
    changes = [a for a in report.actions if a.what != "manual"]
    if not changes:
        print("nothing to repair")
    elif not report.applied:
        print("dry run: nothing changed; run with --apply to make these changes")


def run_recover(args: argparse.Namespace) -> int:
    report = Host(args.config).recover(
        *args.paths, apply=args.apply, take_from_libvirt=args.take_from_libvirt
    )
    if args.json:
        print_json(report.to_dict())
    else:
        _print_recover(report)
    return 1 if report.failed else 0
