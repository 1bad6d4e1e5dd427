"""``svirt label DOMAIN.xml [--dry-run]`` and ``svirt restore DOMAIN.xml``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from svirt import Host

from .output import print_json, print_outcomes, table

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


def run_label(args: argparse.Namespace) -> int:
    host = Host(args.config)
    if args.dry_run:
        plan = host.plan(args.xml)
        live = plan.domain
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
                            "would": p.preview.outcome.value if p.preview else None,
                            "change": p.preview.change if p.preview else None,
                            "on_restore": p.undo,
                        }
                        for p in plan.ops
                    ],
                    "left": [
                        {"driver": lf.driver, "resource": lf.owner, "path": lf.path, "why": lf.why}
                        for lf in plan.left
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
                p.op.driver,
                p.current or "(none)",
                p.preview.change if p.preview else str(p.op.value),
                p.undo or "",
            ]
            for p in plan.ops
        ]
        rows += [
            [lf.owner, lf.path, lf.driver, "", f"left as it is: {lf.why}", ""] for lf in plan.left
        ]
        print(table(rows, ["RESOURCE", "PATH", "DRIVER", "CURRENT", "WOULD", "ON RESTORE"]))
        print("nothing was changed")
        return 0
    res = host.label(args.xml)
    live = res.domain
    sl = live.seclabel("selinux")
    if args.json:
        print_json(
            {
                "domain": live.name,
                "label": sl.label if sl else None,
                "imagelabel": sl.imagelabel if sl else None,
                "outcomes": [o.to_json() for o in res.outcomes],
            }
        )
    else:
        print(
            f"domain {live.name} labelled"
            + (f": process {sl.label}, images {res.imagelabel_status}" if sl and sl.label else "")
        )
        print_outcomes(res.outcomes)
    return 0


def run_restore(args: argparse.Namespace) -> int:
    report = Host(args.config).restore(args.target)
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
                "restored": report.restored,
                "outcomes": [o.to_json() for o in report.outcomes],
                "errors": list(report.errors),
            }
        )
    else:
        levels = report.levels_text
        print(f"domain {report.name}: {report.summary}" + (f"; {levels}" if levels else ""))
        print_outcomes(report.outcomes)
    for text in report.errors:
        print(f"error: {text}", file=sys.stderr)
    return 1 if report.errors else 0
