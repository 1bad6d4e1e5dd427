"""``svirt validate DOMAIN.xml``: parse and check the security view."""

from __future__ import annotations

import argparse
from typing import Any

from svirt import DomainDefinition, Host, domain_resources

from .output import print_json, table

__all__ = ["register", "security_view"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "validate", parents=[common], help="parse a domain XML and check its security view"
    )
    p.add_argument("xml", metavar="DOMAIN.xml", help="domain XML file to check")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--live",
        dest="inactive",
        action="store_false",
        default=None,
        help="parse as live/status XML (dynamic labels must be present)",
    )
    mode.add_argument(
        "--inactive", dest="inactive", action="store_true", help="parse as a persistent definition"
    )
    p.add_argument(
        "--preflight",
        action="store_true",
        help="also ask the policy what QEMU would be denied with the labels it would get "
        "(allocates nothing: the plan is computed and rolled back)",
    )
    p.set_defaults(func=run)


def security_view(domain: DomainDefinition) -> dict[str, Any]:
    return {
        "name": domain.name,
        "type": domain.type,
        "uuid": domain.uuid,
        "seclabels": [
            {
                "model": s.model,
                "type": s.type.value,
                "relabel": "optional" if s.relabel_optional else s.relabel,
                "label": s.label,
                "imagelabel": s.imagelabel,
                "baselabel": s.baselabel,
            }
            for s in domain.seclabels
        ],
        "resources": [
            {
                "kind": r.kind.value,
                "owner": r.owner,
                "path": r.path,
                "flags": list(r.flags),
                "seclabels": [
                    {
                        "model": s.model,
                        "relabel": "optional" if s.relabel_optional else s.relabel,
                        "label": s.label,
                    }
                    for s in r.seclabels
                ],
            }
            for r in domain_resources(domain)
        ],
    }


def _yes_no(relabel: bool | str) -> str:
    """``relabel`` as the XML spells it (``optional`` stays as it is)."""
    if isinstance(relabel, str):
        return relabel
    return "yes" if relabel else "no"


def run(args: argparse.Namespace) -> int:
    host = Host(args.config)
    domain = host.definition(args.xml, inactive=args.inactive)
    view = security_view(domain)
    if args.preflight:
        view["preflight"] = host.preflight(domain)
    if args.json:
        print_json(view)
        return 1 if view.get("preflight") else 0
    print(f"domain {domain.name} ({domain.type}): valid")
    if not domain.seclabels:
        print("seclabels: none in the XML (the host's defaults apply)")
    for s in view["seclabels"]:
        extra = "".join(f" {k}={s[k]}" for k in ("label", "imagelabel", "baselabel") if s[k])
        print(
            f"seclabel model={s['model']} type={s['type']} relabel={_yes_no(s['relabel'])}{extra}"
        )
    rows = []
    for r in view["resources"]:
        notes = list(r["flags"])
        for s in r["seclabels"]:
            notes.append(
                f"{s['model']}:relabel={_yes_no(s['relabel'])}"
                + (f":{s['label']}" if s["label"] else "")
            )
        rows.append([r["kind"], r["owner"], r["path"] or "-", ",".join(notes)])
    if rows:
        print(table(rows, ["KIND", "DEVICE", "PATH", "FLAGS"]))
    if args.preflight:
        findings = view["preflight"]
        for line in findings:
            print(f"pre-flight: {line}")
        if not findings:
            print("pre-flight: QEMU would be allowed everything it needs")
        return 1 if findings else 0
    return 0
