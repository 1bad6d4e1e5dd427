"""``svirt policy check SCON TCON CLASS PERM...``: a decision from the real policy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from svirt import load_config
from svirt.policy import BACKENDS, Decision, PolicyOracle, Reason, check

from .output import print_json

__all__ = ["add_policy_options", "decision_view", "open_oracle", "register"]

_OUTCOME = {
    Reason.ALLOW: "allowed",
    Reason.DONTAUDIT: "denied (dontaudit)",
    Reason.TERULE: "denied (no allow rule)",
    Reason.BOOLEAN: "denied (boolean)",
    Reason.CONSTRAINT: "denied (constraint)",
    Reason.RBAC: "denied (role)",
    Reason.BOUNDS: "denied (bounds)",
}


def add_policy_options(p: argparse.ArgumentParser) -> None:
    """``--policy`` and ``--backend``, shared with ``svirt verify``."""
    p.add_argument(
        "--policy",
        metavar="FILE",
        type=Path,
        help="binary policy to ask (default: svirt.conf policy_path, else the installed one)",
    )
    p.add_argument(
        "--backend", choices=BACKENDS, help="how to ask libsepol (default: audit2why if present)"
    )


def open_oracle(args: argparse.Namespace) -> PolicyOracle:
    cfg = load_config(args.config)
    return PolicyOracle(args.policy or cfg.policy_path, backend=args.backend)


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("policy", help="ask the binary SELinux policy (policy check)")
    group_sub = group.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    group_sub.required = True
    p = group_sub.add_parser(
        "check",
        parents=[common],
        help="may SCON do PERM... on a CLASS object labelled TCON, and why",
        description=(
            "Decide an access from the real binary policy, with audit2why's reason: "
            "allowed, no allow rule, a boolean that would allow it, a constraint (MCS "
            "categories) and its text, dontaudit, role, bounds."
        ),
    )
    p.add_argument("scontext", metavar="SCON", help="process context")
    p.add_argument("tcontext", metavar="TCON", help="object context")
    p.add_argument("tclass", metavar="CLASS", help="object class (file, blk_file, dir, ...)")
    p.add_argument("perms", metavar="PERM", nargs="+", help="permissions (read write open ...)")
    add_policy_options(p)
    p.set_defaults(func=run_check)


def decision_view(
    oracle: PolicyOracle, scon: str, tcon: str, tclass: str, perms: list[str], d: Decision
) -> dict[str, Any]:
    granted = oracle.granting_booleans(scon, tcon, tclass, perms) if d.allowed else ()
    return {
        "allowed": d.allowed,
        "reason": d.reason.name.lower(),
        "scontext": scon,
        "tcontext": tcon,
        "tclass": tclass,
        "perms": perms,
        "booleans": [{"name": n, "value": v} for n, v in d.booleans],
        "granted_by_booleans": [{"name": n, "value": v} for n, v in granted],
        "constraint": d.constraint,
        "explanation": d.describe(),
        "policy": str(oracle.path),
        "backend": oracle.backend,
    }


def run_check(args: argparse.Namespace) -> int:
    oracle = open_oracle(args)
    perms: list[str] = args.perms
    d = check(args.scontext, args.tcontext, args.tclass, perms, policy=oracle)
    view = decision_view(oracle, args.scontext, args.tcontext, args.tclass, perms, d)
    if args.json:
        print_json(view)
        return 0
    print(
        f"{_OUTCOME[d.reason]}: {args.scontext} -> {args.tcontext} "
        f"{args.tclass} {{ {' '.join(perms)} }}"
    )
    if d.reason is Reason.CONSTRAINT and d.constraint:
        print(f"constraint: {d.constraint}")
        if d.constraint.startswith("mlsconstrain"):
            print(
                "why: the process's level must dominate the object's (MCS categories): "
                "relabel the object with the process's categories; audit2allow cannot fix this"
            )
        else:
            print("why: a user/role/type constraint forbids it; audit2allow cannot fix this")
    for name, value in d.booleans:
        print(f"allowed if: setsebool -P {name} {'on' if value else 'off'}")
    if d.reason is Reason.TERULE:
        print("why: no allow rule for these types (and no boolean would add one)")
    if d.reason is Reason.DONTAUDIT:
        print("why: no allow rule, and a dontaudit rule keeps the denial out of the audit log")
    for b in view["granted_by_booleans"]:
        print(f"granted through: boolean {b['name']} is {'on' if b['value'] else 'off'}")
    print(f"policy: {oracle.path} ({oracle.backend})")
    return 0
