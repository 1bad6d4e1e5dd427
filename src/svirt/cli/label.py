"""``svirt label DOMAIN.xml [--dry-run]`` and ``svirt restore DOMAIN.xml``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from svirt import Action, DomainDefinition, Host

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
    p = sub.add_parser("restore", parents=[common], help="restore every label set by 'svirt label'")
    p.add_argument("xml", metavar="DOMAIN.xml", help="the domain XML that was labelled")
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
    mgr, domain = _load(args)
    _released, result = mgr.restore(domain)
    restored = [op for op, _ in result.outcomes if op.action is Action.RESTORE]
    if args.json:
        print_json(
            {
                "domain": domain.name,
                "restored": [op.path for op in restored],
                "errors": [str(e) for _, e in result.errors],
            }
        )
    else:
        print(f"domain {domain.name}: {len(restored)} label(s) restored, MCS level released")
    for _op, exc in result.errors:
        print(f"error: {exc}", file=sys.stderr)
    return 1 if result.errors else 0
