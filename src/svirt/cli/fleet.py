"""``svirt migrate-label`` and ``svirt fleet status``: the fleet ledger (etcd)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from svirt import Config, ConfigError, Host, load_config

from .output import print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "migrate-label",
        parents=[common],
        help='hand a domain\'s MCS level to another host (ledger = "etcd")',
    )
    p.add_argument("name", metavar="NAME", help="domain name")
    p.add_argument("--to", required=True, metavar="HOST", help="the destination's host_id")
    p.set_defaults(func=run_migrate)
    p = sub.add_parser(
        "fleet",
        parents=[common],
        help="this host in the etcd fleet ledger (status), or give up a pair that follows "
        "a domain (forget NAME)",
    )
    p.add_argument("what", choices=["status", "forget"], help="status or forget")
    p.add_argument("name", nargs="?", metavar="NAME", help="forget: the domain")
    p.set_defaults(func=run_status)


def _fleet_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if cfg.ledger != "etcd":
        raise ConfigError(
            'the fleet commands need ledger = "etcd" in svirt.conf', source=cfg.source
        )
    return cfg


def run_migrate(args: argparse.Namespace) -> int:
    level = Host(_fleet_config(args)).migrate_label(args.name, args.to)
    if args.json:
        print_json({"domain": args.name, "level": level, "to": args.to})
    else:
        print(
            f"MCS level {level} of domain {args.name} handed over to host {args.to}; "
            "it starts there with this level"
        )
    return 0


def run_forget(args: argparse.Namespace) -> int:
    """``svirt fleet forget NAME``: give up the pair that follows a domain."""
    if not args.name:
        print("error: svirt fleet forget needs a domain NAME", file=sys.stderr)
        return 2
    level = Host(_fleet_config(args)).fleet_forget(args.name)
    print(f"MCS level {level} no longer follows domain {args.name}; it is free")
    return 0


def run_status(args: argparse.Namespace) -> int:
    if args.what == "forget":
        return run_forget(args)
    st = Host(_fleet_config(args)).fleet_status()
    if args.json:
        print_json(st)
        return 0
    print(f"host {st['host']}; etcd {', '.join(st['endpoints'])}: {st['cluster']}")
    print(f"keeper: {st['keeper']}")
    for r in st["reservations"]:
        print(f"  {r['level']:<20} {r['domain']}{' (follows the domain)' if r['sticky'] else ''}")
    if st["pending_releases"]:
        print(f"releases waiting for etcd: {', '.join(st['pending_releases'])}")
    if "warning" in st:
        print(f"warning: {st['warning']}")
    return 0
