"""``svirt verify [--json] [--html FILE [--audit-log LOG]] [NAME...]``: the isolation
matrix of the running domains (or of the named ones, each against every other).

Exit 0 when no running VM can reach another's resources, 1 when isolation is broken or
a VM cannot use its own resources (with the fix that keeps isolation).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from svirt import Host, SvirtError
from svirt.policy import CheckedResource, VerifyReport

from .output import print_json, table
from .policy import add_policy_options

__all__ = ["register", "report_view"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify",
        parents=[common],
        help="prove from the policy that no running VM can reach another's resources",
        description=(
            "For every running domain (svirt's and libvirt's live XML), ask the binary "
            "policy whether its process label can read or write every other domain's "
            "resources with the labels they carry now. Exit 1 when isolation is broken "
            "or a VM cannot use its own resources."
        ),
    )
    add_policy_options(p)
    # issue 14 (html): verify NAME... and the page
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="check only these running domains, each against every other (default: all)",
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        type=Path,
        help="also write the isolation matrix as one self-contained HTML page",
    )
    p.add_argument(
        "--audit-log",
        metavar="LOG",
        help="with --html: add the denial timeline of `svirt audit explain` on this log",
    )
    p.set_defaults(func=run)


def _resource(r: CheckedResource) -> dict[str, Any]:
    return {
        "domain": r.domain,
        "owner": r.owner,
        "path": r.path,
        "kind": r.kind,
        "class": r.tclass,
        "label": r.label,
        "shared": r.shared,
        "readonly": r.readonly,
        "problem": r.problem,
    }


def _booleans(items: tuple[tuple[str, bool], ...]) -> list[dict[str, Any]]:
    return [{"name": n, "value": v} for n, v in items]


def report_view(report: VerifyReport) -> dict[str, Any]:
    return {
        "isolated": report.separated,
        # issue 11: both layers
        "selinux": {"policy_isolated": report.isolated, "enforcing": report.selinux_enforcing},
        "pairs": [
            {
                "subject": p.subject,
                "target": p.target,
                "selinux_policy_denies": p.selinux_policy_denies,
                "selinux_enforced": p.selinux_enforced,
                "dac_denies": p.dac_denies,
                "isolated": p.separated,
                "shared_label": p.shared_label,
            }
            for p in report.pairs or ()
        ],
        "dac": [
            {
                "subject": a.subject,
                "identity": a.identity,
                "target": a.target,
                "access": a.what,
                "path": a.path,
                "why": a.why,
            }
            for a in report.dac
        ],
        "policy": str(report.policy),
        "backend": report.backend,
        "decisions": report.decisions,
        "domains": [
            {
                "name": d.name,
                "source": d.source,
                "pid": d.pid,
                "state": d.state,
                "process_label": d.process_label,
                "xml": str(d.xml_path),
            }
            for d in report.domains
        ],
        "resources": [_resource(r) for r in report.resources],
        "findings": [
            {
                "subject": f.subject,
                "subject_label": f.subject_label,
                "resource": _resource(f.resource) if f.resource else None,
                "accesses": [a.value for a in f.accesses],
                "exposures": [e.value for e in f.exposures],
                "booleans": _booleans(f.booleans),
                "explanation": f.explanation,
            }
            for f in report.findings
        ],
        "own_denials": [
            {
                "domain": o.domain,
                "process_label": o.process_label,
                "resource": _resource(o.resource),
                "access": o.access.value,
                "reason": o.decision.reason.name.lower(),
                "explanation": o.decision.describe(),
                "fixes": [{"text": x.text, "command": x.command} for x in o.fixes],
            }
            for o in report.own_denials
        ],
        "shared": [
            {"resource": _resource(s.resource), "readers": s.readers, "writers": s.writers}
            for s in report.shared
        ],
        "shared_labels": [  # static
            {
                "label": g.label,
                "domains": list(g.domains),
                "resources": [
                    {"resource": _resource(s.resource), "readers": s.readers, "writers": s.writers}
                    for s in g.resources
                ],
            }
            for g in report.shared_labels
        ],
        "boolean_risks": [
            {
                "subject": b.subject,
                "resource": _resource(b.resource),
                "access": b.access.value,
                "booleans": _booleans(b.booleans),
            }
            for b in report.boolean_risks
        ],
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in report.skipped],
        # issue 14 (html): every VM x every resource, as the page shows it
        "matrix": [
            {
                "subject": c.subject,
                "domain": c.resource.domain,
                "owner": c.resource.owner,
                "path": c.resource.path,
                "access": c.access.value,
                "reason": c.reason,
                "own": c.own,
                "finding": c.finding,
                "own_denial": c.own_denial,
                "dac": c.dac,
                "dac_reason": c.dac_reason,
            }
            for c in (report.matrix.cells if report.matrix else ())
        ],
    }


def _print_text(report: VerifyReport, looked_in: str) -> None:
    n_res = len(report.resources)
    print(
        f"policy {report.policy} ({report.backend}): {len(report.domains)} running "
        f"domain{'s' if len(report.domains) != 1 else ''}, {n_res} "
        f"resource{'s' if n_res != 1 else ''}, {report.decisions} decisions"
    )
    if report.domains:
        rows = [
            [d.name, d.source, str(d.pid), d.process_label or "(none: not confined)"]
            for d in report.domains
        ]
        print(table(rows, ["DOMAIN", "SOURCE", "PID", "PROCESS LABEL"]))
    else:
        print(f"no running domains (looked in {looked_in})")
    if report.shared:
        print("shared (declared read-only or shareable):")
        for s in report.shared:
            r = s.resource
            print(f"  {r.domain} {r.owner} {r.path} labelled {r.label or '-'}: {s.users}")
    for g in report.shared_labels:  # static
        print(f"shared by configuration (one static label {g.label}): {', '.join(g.domains)}")
        for s in g.resources:
            r = s.resource
            print(f"  {r.domain} {r.owner} {r.path}: usable by {', '.join(s.readers)}")
    if report.own_denials:
        print("own resources the domain cannot use (the VM will fail):")
        for o in report.own_denials:
            r = o.resource
            print(
                f"  {o.domain} cannot {o.access.value} its {r.owner} {r.path} "
                f"labelled {r.label}: {o.decision.describe()}"
            )
            for x in o.fixes:
                print(f"      fix: {x.text}" + (f": {x.command}" if x.command else ""))
    if report.boolean_risks:
        print("denied now, allowed if a boolean changes:")
        for b in report.boolean_risks:
            fixes = " or ".join(f"{n}={'on' if v else 'off'}" for n, v in b.booleans)
            r = b.resource
            print(
                f"  {b.subject} could {b.access.value} {r.domain}'s {r.owner} {r.path} if {fixes}"
            )
    notes = [r for r in report.resources if r.problem]
    if notes:
        print("notes:")
        for r in notes:
            print(f"  {r.domain} {r.owner} {r.path}: {r.problem}")
    if report.skipped:
        print("skipped:")
        for skip in report.skipped:
            print(f"  {skip.path}: {skip.reason}")
    enforcing = "enforced" if report.selinux_enforcing else "NOT enforced on this host"
    if report.isolated:
        print(f"SELinux policy: isolation OK ({enforcing})")
    else:
        n = len(report.findings)
        print(f"SELinux policy: isolation BROKEN: {n} finding{'s' if n != 1 else ''} ({enforcing})")
        for f in report.findings:
            print(f"  {f.explanation}")
    if report.pairs is None:
        return
    if report.dac:
        print("DAC allows now:")
        for a in report.dac:
            what = f"read {a.target}'s memory" if a.what == "memory" else f"{a.what} {a.target}'s"
            print(f"  {a.subject} ({a.identity}) can {what} {a.path}: {a.why}")
    elif report.pairs:
        print("DAC: no QEMU can open another VM's private files or read its memory")
    broken = [p for p in report.pairs if not p.as_configured]
    if not broken:
        print(
            "isolation OK: every running VM is kept from every other by a layer in force"
            + (
                ", except those sharing a static label by configuration"
                if report.shared_labels
                else ""
            )
        )
        return
    print(f"not isolated: {len(broken)} pair{'s' if len(broken) != 1 else ''}")
    for p in broken:
        print(f"  {p.describe()}")


def _write_page(path: Path, page: str) -> None:
    """Write the page whole or not at all (a temporary file renamed over ``path``). The
    temporary file is a new one (never a name planted in a shared directory, nor a
    symlink followed: root writes it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    created = False
    try:
        fd = os.open(tmp, flags, 0o666)
        created = True
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, path)
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise SvirtError(f"cannot write the page: {exc.strerror}", source=str(path)) from None


def run(args: argparse.Namespace) -> int:
    if args.audit_log is not None and args.html is None:
        print("error: --audit-log needs --html FILE (the timeline is in the page)", file=sys.stderr)
        return 2
    host = Host(args.config)
    cfg = host.config
    report = host.verify(args.names or None, policy=args.policy, backend=args.backend)
    if args.html is not None:
        page = host.verify_page(report, audit_log=args.audit_log, names=args.names or None)
        _write_page(args.html, page)
    if args.json:
        print_json(report_view(report))
    else:
        _print_text(report, f"{cfg.state_dir / 'domains'} and {cfg.libvirt_run_dir}")
        if args.html is not None:
            print(f"isolation page written to {args.html}")
    return 0 if report.separated and report.usable else 1
