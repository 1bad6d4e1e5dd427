"""``svirt label DOMAIN.xml [--dry-run]`` and ``svirt restore DOMAIN.xml``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from svirt.conf import load_config
from svirt.domain import parse_domain_file
from svirt.errors import SvirtError
from svirt.security.manager import SecurityManager, check_domain, default_model

from .output import print_json, print_outcomes, table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "label", parents=[common], help="label every resource of a domain without starting it"
    )
    p.add_argument("xml", metavar="DOMAIN.xml")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (path, current label, new label) and change nothing",
    )
    p.set_defaults(func=run_label)
    p = sub.add_parser("restore", parents=[common], help="restore every label set by 'svirt label'")
    p.add_argument("xml", metavar="DOMAIN.xml")
    p.set_defaults(func=run_restore)


def _load(args: argparse.Namespace) -> tuple[SecurityManager, Any]:
    cfg = load_config(args.config)
    domain = parse_domain_file(args.xml, default_model=default_model(cfg))
    try:
        check_domain(domain, cfg)
    except SvirtError as exc:
        raise exc.with_source(args.xml) from None
    return SecurityManager(cfg), domain


def run_label(args: argparse.Namespace) -> int:
    from svirt import Host

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
    res = host.label_report(args.xml)
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
    from svirt import Host

    mgr, domain = _load(args)
    res = Host(mgr.cfg).restore_labels(domain.name, fallback=domain)
    if args.json:
        print_json(
            {
                "domain": domain.name,
                "restored": res.restored,
                "outcomes": [o.to_json() for o in res.outcomes],
                "errors": list(res.errors),
            }
        )
    else:
        print(f"domain {domain.name}: {res.summary}; MCS level released")
        print_outcomes(res.outcomes)
    for text in res.errors:
        print(f"error: {text}", file=sys.stderr)
    return 1 if res.errors else 0
