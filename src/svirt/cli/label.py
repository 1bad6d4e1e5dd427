"""``svirt label DOMAIN.xml [--dry-run]`` and ``svirt restore DOMAIN.xml``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from svirt import DomainDefinition, Host

from .output import print_json, table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "label", parents=[common], help="label every resource of a domain without starting it"
    )
    p.add_argument("xml", metavar="DOMAIN.xml", help="domain XML file (libvirt's format)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (path, current label, new label) and change nothing",
    )
    p.set_defaults(func=run_label)
    p = sub.add_parser(
        "restore",
        parents=[common],
        help="restore every label set by 'svirt label' (by name, from svirt's record)",
        description=(
            "Restore every label of a labelled domain and release its MCS pair. The "
            "argument is a domain name unless it names an existing file, which is then "
            "read as domain XML. Whenever svirt has a record of the domain, what was "
            "labelled is restored from that record: a deleted or edited XML file changes "
            "nothing (a note says how an edited one differs)."
        ),
    )
    p.add_argument(
        "target",
        metavar="NAME|DOMAIN.xml",
        help="the labelled domain's name, or its XML file",
    )
    p.set_defaults(func=run_restore)


def _load(args: argparse.Namespace) -> tuple[Host, DomainDefinition]:
    host = Host(args.config)
    return host, host.definition(args.xml)


def run_label(args: argparse.Namespace) -> int:
    mgr, domain = _load(args)
    if args.dry_run:
        live, plan = mgr.plan(domain)
        if args.json:
            print_json(
                {
                    "domain": live.name,
                    "seclabels": [
                        {"model": s.model, "label": s.label, "imagelabel": s.imagelabel}
                        for s in live.seclabels
                    ],
                    "plan": [
                        {
                            "driver": p.op.driver,
                            "resource": p.op.owner,
                            "path": p.op.path,
                            "current": p.current,
                            "new": p.op.value,
                            "remember": p.op.remember,
                            "remembered": p.remembered,
                        }
                        for p in plan
                    ],
                }
            )
            return 0
        print(f"dry run: domain {live.name} would get")
        for s in live.seclabels:
            if s.label or s.imagelabel:
                print(f"  {s.model}: label={s.label} imagelabel={s.imagelabel}")
        rows = [
            [
                p.op.owner,
                p.op.path,
                p.current or "(none)",
                p.op.value or "",
                "yes" if p.op.remember else "no",
            ]
            for p in plan
        ]
        print(table(rows, ["RESOURCE", "PATH", "CURRENT", "NEW", "REMEMBER"]))
        print("nothing was changed")
        return 0
    live = mgr.label(domain)
    sl = live.seclabel("selinux")
    if args.json:
        print_json(
            {
                "domain": live.name,
                "label": sl.label if sl else None,
                "imagelabel": sl.imagelabel if sl else None,
            }
        )
    else:
        print(
            f"domain {live.name} labelled"
            + (f": process {sl.label}, images {sl.imagelabel}" if sl and sl.label else "")
        )
    return 0


def run_restore(args: argparse.Namespace) -> int:
    report = Host(args.config).restore(args.target)
    restored = report.restored
    if report.differences:
        print(
            f"note: {args.target} differs from what svirt labelled "
            f"({'; '.join(report.differences)}); restored what was labelled, "
            "from svirt's record",
            file=sys.stderr,
        )
    if args.json:
        print_json(
            {
                "domain": report.name,
                "from_record": report.from_record,
                "differences": list(report.differences),
                "restored": list(restored),
                "errors": list(report.errors),
            }
        )
    else:
        print(f"domain {report.name}: {len(restored)} label(s) restored, MCS level released")
    for text in report.errors:
        print(f"error: {text}", file=sys.stderr)
    return 1 if report.errors else 0
