"""Pre-flight: ask the policy, before QEMU does, whether a VM can use its resources.

For a prepared domain (labels generated, resources labelled), every local resource
with a path is checked: may the domain's process label do what QEMU needs (read for
read-only disks, backing layers, kernel, initrd, dtb and ACPI tables; read and write
otherwise) on the object's class, with the label the resource carries now, or the
label a plan will give it (``labels``)? Each denial becomes a :class:`Finding`, explained
by the audit explainer exactly as if QEMU had hit it: type enforcement or the MCS
constraint with both levels, the boolean to set, the fix that keeps isolation
(relabel='yes', a per-disk ``<seclabel>``, ``chcon -l``, ``semanage fcontext`` +
``restorecon``), and never audit2allow for an MCS denial.

This replaces QEMU's "Could not open '…': Permission denied" of the seed's static
``relabel='no'`` story with the reason and the fix, before anything is started.
:func:`check_before_start` is what the lifecycle calls: it fails on an enforcing host
and returns warnings on a permissive one or where SELinux is off.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from svirt.audit.explain import Cause, Denial, Explanation, Fix, explain_denial
from svirt.audit.owners import LiveDomain, load_live_domains
from svirt.conf import Config
from svirt.domain.model import Domain, SeclabelType
from svirt.domain.resources import Resource, ResourceKind, domain_resources
from svirt.errors import PREFIX_XML_ERROR, LaunchError, SvirtError, XMLError
from svirt.host import devices as host_devices
from svirt.host import selinux as host_selinux
from svirt.host.access import access_as
from svirt.host.ids import Identity
from svirt.launch.qemu import kvm_usable
from svirt.policy.oracle import Access, Decision, PolicyOracle, Reason, tclass_for_mode
from svirt.policy.verify import UNLABELED_CONTEXT
from svirt.security.selinux import SELinuxDriver, shared_policy_oracle

__all__ = [
    "DacFinding",
    "Finding",
    "check_before_start",
    "dac_findings",
    "preflight_check",
    "preflight_summary",
    "process_findings",
    "resource_accesses",
]

log = logging.getLogger(__name__)

# QEMU only reads these; libvirt labels them with the shared content label.
_READ_ONLY_KINDS = (
    ResourceKind.BACKING,
    ResourceKind.KERNEL,
    ResourceKind.INITRD,
    ResourceKind.DTB,
    ResourceKind.ACPI_TABLE,
)
# Connecting to a unix socket needs write on the socket file (and connectto on the
# listening process, which is no file's label).
_SOCKET_PERMS = ("getattr", "write")


@dataclass(frozen=True, slots=True)
class Finding:
    """QEMU, running as ``process_label``, would be denied ``access`` to one resource."""

    owner: str  # "disk vda", "kernel", ...
    path: str
    label: str  # the label the resource has (or will have)
    tclass: str
    access: Access
    process_label: str
    decision: Decision
    explanation: Explanation
    fixes: tuple[Fix, ...]  # most direct first; the explanation's, after svirt's own
    notes: tuple[str, ...]
    verb: str | None = None  # what is denied when it is not file access ("execmem", ...)

    @property
    def cause(self) -> Cause:
        return self.explanation.cause

    def summary(self) -> str:
        """One line: what would be denied, why, and the first fix."""
        if self.verb is not None:
            target = f" {self.path}" if self.path else ""
            text = (
                f"{self.owner}{target} ({self.label}): {self.process_label} cannot "
                f"{self.verb} ({self.explanation.why})"
            )
        else:
            text = (
                f"{self.owner} {self.path} labelled {self.label}: {self.process_label} "
                f"cannot {self.access.value} it ({self.explanation.why})"
            )
        fix = next((f for f in self.fixes if f.command), None)
        if fix is not None:
            text += f"; fix: {fix.command}"
        return text

    def to_dict(self) -> dict[str, Any]:
        e = self.explanation
        return {
            "owner": self.owner,
            "path": self.path,
            "label": self.label,
            "class": self.tclass,
            "access": self.verb or self.access.value,
            "process_label": self.process_label,
            "reason": self.decision.reason.name.lower(),
            "cause": e.cause.value,
            "why": e.why,
            "basis": e.basis,
            "booleans": [{"name": n, "value": v} for n, v in e.booleans],
            "fixes": [{"text": f.text, "command": f.command} for f in self.fixes],
            "do_not": e.do_not,
            "notes": list(self.notes),
        }


def _paths(res: Resource) -> Iterator[tuple[str, Access]]:
    """The paths QEMU opens for one resource, and how."""
    if res.path is None and res.kind is not ResourceKind.HOSTDEV:
        return
    if not res.local or res.storage_type in ("dir", "network", "volume"):
        return
    if res.kind in _READ_ONLY_KINDS:
        assert res.path is not None
        yield res.path, Access.READ
    elif res.kind is ResourceKind.DISK:
        assert res.path is not None
        yield res.path, Access.READ if res.readonly else Access.READ_WRITE
    elif res.kind is ResourceKind.CHARDEV:
        assert res.path is not None
        if res.chardev_type == "unix" and res.chardev_mode != "connect":
            return  # QEMU creates the socket it listens on
        if res.chardev_type == "pipe":
            pin, pout = res.path + ".in", res.path + ".out"
            if os.path.exists(pin) and os.path.exists(pout):
                yield pin, Access.READ
                yield pout, Access.READ_WRITE
                return
        yield res.path, Access.READ_WRITE
    elif res.kind is ResourceKind.HOSTDEV and res.hostdev is not None:
        try:
            paths = host_devices.hostdev_paths(res.hostdev)
        except (OSError, SvirtError) as exc:
            log.debug("pre-flight: %s: %s", res.owner, exc)
            return
        access = Access.READ if res.hostdev.readonly else Access.READ_WRITE
        for p in paths:
            yield p, access
    else:  # nvram, input, memory, tpm
        assert res.path is not None
        yield res.path, Access.READ_WRITE


def resource_accesses(domain: Domain) -> list[tuple[str, str, Access]]:
    """(owner, path, access) for every local path QEMU opens, each path once with the
    strongest access any resource needs on it."""
    found: dict[str, tuple[str, Access]] = {}
    for res in domain_resources(domain):
        for path, access in _paths(res):
            prev = found.get(path)
            if prev is None or (prev[1] is Access.READ and access is Access.READ_WRITE):
                found[path] = (prev[0] if prev else res.owner, access)
    return [(owner, path, access) for path, (owner, access) in found.items()]


def _relabel_fixes(domain: Domain, owner: str, path: str) -> list[Fix]:
    """Where nothing labelled the resource because relabelling is off, turning it on is
    the direct fix (the seed's static relabel='no' story)."""
    sl = domain.seclabel("selinux")
    if sl is not None and not sl.relabel and sl.label is not None:
        return [
            Fix(
                f"domain {domain.name} has <seclabel type='{sl.type.value}' relabel='no'>, so "
                "nothing labels its resources: let svirt relabel them at start (and restore "
                "them at stop)",
                f"<seclabel type='{sl.type.value}' model='selinux' relabel='yes'>"
                f"<label>{sl.label}</label></seclabel>",
            )
        ]
    for res in domain_resources(domain):
        if res.owner != owner or res.path != path:
            continue
        for dsl in (*res.seclabels, *res.parent_seclabels):
            if dsl.model in (None, "selinux") and not dsl.relabel:
                return [
                    Fix(
                        f"{owner}'s source has <seclabel relabel='no'>, so svirt leaves its "
                        "label alone: drop that per-disk seclabel, or give it relabel='yes'",
                        "<source ...><seclabel model='selinux' relabel='yes'/></source>",
                    )
                ]
    return []


def _self_as_live(cfg: Config, domain: Domain, process_label: str) -> LiveDomain:
    sl = domain.seclabel("selinux")
    disks = tuple(
        src.path
        for d in domain.disks
        if d.source is not None
        for src in d.source.chain()
        if src.path
    )
    return LiveDomain(
        name=domain.name,
        origin="svirt",
        source=cfg.state_dir / "domains" / f"{domain.name}.xml",
        pid=None,
        label=process_label,
        imagelabel=sl.imagelabel if sl is not None else None,
        seclabel_type=sl.type.value if sl is not None else None,
        relabel=sl.relabel if sl is not None else None,
        disks=disks,
    )


def preflight_check(
    cfg: Config,
    domain: Domain,
    oracle: PolicyOracle | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    domains: Sequence[LiveDomain] | None = None,
) -> list[Finding]:
    """What QEMU would be denied, resource by resource, for a prepared ``domain``.

    ``oracle`` None loads the configured policy (once per process); ``labels`` maps
    paths to the labels a plan will give them (default: the labels on disk now);
    ``domains`` are the other running domains (default: svirt's and libvirt's live XML),
    used to name the VM a label's categories belong to. A domain without an SELinux
    process label (``type='none'``, no selinux seclabel) has nothing to check.
    """
    sl = domain.seclabel("selinux")
    if sl is None or sl.type is SeclabelType.NONE or sl.label is None:
        return []
    process = sl.label
    if oracle is None:
        oracle = shared_policy_oracle(cfg.policy_path)
    if domains is None:
        domains = load_live_domains(cfg.state_dir, cfg.libvirt_run_dir)
    others = [d for d in domains if not (d.origin == "svirt" and d.name == domain.name)]
    known = [_self_as_live(cfg, domain, process), *others]
    planned = labels or {}
    findings: list[Finding] = []
    for owner, path, access in resource_accesses(domain):
        try:
            st = os.stat(path)
            label = planned.get(path) or host_selinux.getfilecon(path) or UNLABELED_CONTEXT
        except OSError as exc:
            # A missing image fails QEMU for another reason, reported by QEMU itself.
            log.debug("pre-flight: skipping %s %s: %s", owner, path, exc.strerror)
            continue
        tclass = tclass_for_mode(st.st_mode)
        perms = _SOCKET_PERMS if tclass == "sock_file" else access.perms(tclass)
        decision = oracle.decide(process, label, tclass, perms)
        if decision.allowed:
            continue
        denial = Denial(
            scontext=process,
            tcontext=label,
            tclass=tclass,
            perms=tuple(perms),
            denied=True,
            permissive=False,
            user_space=False,
            comm=os.path.basename(cfg.qemu_binary),
            exe=cfg.qemu_binary,
            pids=(),
            name=os.path.basename(path),
            path=path,
            dev=None,
            ino=st.st_ino,
            count=1,
            first=0.0,
            last=0.0,
            serials=(),
        )
        explanation = explain_denial(denial, oracle=oracle, domains=known)
        notes = [n for n in explanation.notes if not n.startswith("the loaded policy does not")]
        if decision.reason.is_bad_input:
            notes.insert(
                0,
                f"the policy does not know the label {label}: the kernel would see the file "
                f"as {UNLABELED_CONTEXT}; the reason is inferred from the contexts",
            )
        fixes = (*_relabel_fixes(domain, owner, path), *explanation.fixes)
        findings.append(
            Finding(
                owner=owner,
                path=path,
                label=label,
                tclass=tclass,
                access=access,
                process_label=process,
                decision=decision,
                explanation=explanation,
                fixes=fixes,
                notes=tuple(notes),
            )
        )
    return findings


# --- process permissions: may the daemon start QEMU in the VM's label, and run it? ----


def _qemu_uses_tcg(domain: Domain, identity: Identity | None) -> bool:
    if domain.type == "qemu":
        return True
    return not kvm_usable(identity)


def _process_denial(scon: str, tcon: str, tclass: str, perm: str, exe: str) -> Denial:
    return Denial(
        scontext=scon,
        tcontext=tcon,
        tclass=tclass,
        perms=(perm,),
        denied=True,
        permissive=False,
        user_space=False,
        comm=os.path.basename(exe),
        exe=exe,
        pids=(),
        name=None,
        path=exe if tclass == "file" else None,
        dev=None,
        ino=None,
        count=1,
        first=0.0,
        last=0.0,
        serials=(),
    )


def process_findings(
    cfg: Config,
    domain: Domain,
    oracle: PolicyOracle,
    *,
    daemon_context: str,
    identity: Identity | None = None,
    domains: Sequence[LiveDomain] = (),
) -> list[Finding]:
    """What the kernel would refuse before QEMU opens anything: the daemon's
    ``transition`` to the VM's label, that label's ``entrypoint`` on the QEMU binary,
    and ``execmem`` where QEMU runs under TCG (its translator maps writable executable
    memory: seed 001's "Could not allocate dynamic translator buffer").

    Raises :class:`XMLError` (libvirt's ``Invalid security label``) when the policy does
    not know the VM's label (a type it lacks, no level): libvirt refuses such a static
    label before start (``security_check_context``)."""
    sl = domain.seclabel("selinux")
    if sl is None or sl.type is SeclabelType.NONE or sl.label is None:
        return []
    process = sl.label
    if oracle.decide(process, process, "process", ("transition",)).reason is Reason.BADSCON:
        raise XMLError(PREFIX_XML_ERROR + f"Invalid security label {process}")
    exe = os.path.realpath(cfg.qemu_binary)
    try:
        exe_label = host_selinux.getfilecon(exe) or UNLABELED_CONTEXT
    except OSError:
        exe_label = None  # a missing binary fails the start for its own reason
    checks: list[tuple[str, str, str, str, str]] = [
        ("the daemon", daemon_context, process, "process", "transition"),
    ]
    if exe_label is not None:
        checks.append(("the QEMU binary", process, exe_label, "file", "entrypoint"))
    if _qemu_uses_tcg(domain, identity):
        checks.append(("QEMU under TCG", process, process, "process", "execmem"))
    findings: list[Finding] = []
    for owner, scon, tcon, tclass, perm in checks:
        decision = oracle.decide(scon, tcon, tclass, (perm,))
        if decision.allowed or decision.reason is Reason.BADSCON:
            continue
        denial = _process_denial(scon, tcon, tclass, perm, exe)
        explanation = explain_denial(denial, oracle=oracle, domains=domains)
        notes = list(explanation.notes)
        if perm == "execmem":
            notes.insert(
                0,
                "QEMU's TCG translator needs writable executable memory; without it QEMU "
                "exits with 'Could not allocate dynamic translator buffer'",
            )
        findings.append(
            Finding(
                owner=owner,
                path=exe if tclass == "file" else "",
                label=tcon,
                tclass=tclass,
                access=Access.READ,
                process_label=scon,
                decision=decision,
                explanation=explanation,
                fixes=explanation.fixes,
                notes=tuple(notes),
                verb=perm,
            )
        )
    return findings


# --- DAC: may the QEMU identity reach and open each file? ---------------------------


@dataclass(frozen=True, slots=True)
class DacFinding:
    """QEMU, running as ``identity``, could not reach or open one resource."""

    owner: str  # "disk vda", ...
    path: str  # the file QEMU opens
    blocked: str  # the directory it cannot search, or the file itself
    need: str  # "search", "read", "read-write"
    identity: str  # "107:107 (svirt-qemu)"
    mode: str  # "0700 root:root" of ``blocked``
    fix: str

    def summary(self) -> str:
        what = "directory" if self.need == "search" else "file"
        return (
            f"{self.owner} {self.path}: the QEMU user {self.identity} cannot {self.need} "
            f"{what} {self.blocked} (mode {self.mode}); fix: {self.fix}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "path": self.path,
            "blocked": self.blocked,
            "need": self.need,
            "identity": self.identity,
            "mode": self.mode,
            "cause": "dac",
            "fixes": [{"text": "", "command": self.fix}],
        }


def _mode_text(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or "unknown"
    return f"{stat.S_IMODE(st.st_mode):04o} {st.st_uid}:{st.st_gid}"


def _parents(path: str) -> list[str]:
    """Every directory the kernel walks to reach ``path`` (as given, then resolved)."""
    out: list[str] = []
    for p in (os.path.abspath(path), os.path.realpath(path)):
        d = os.path.dirname(p)
        chain = []
        while True:
            chain.append(d)
            if d == "/":
                break
            d = os.path.dirname(d)
        for c in reversed(chain):
            if c not in out:
                out.append(c)
    return out


def dac_findings(
    domain: Domain,
    identity: Identity,
    *,
    granted: frozenset[str] = frozenset(),
    private_dev: bool = True,
) -> list[DacFinding]:
    """What the kernel's DAC would refuse QEMU's ``identity``, decided by the kernel in
    a child that takes that identity (:func:`svirt.host.access.access_as`): search on
    every parent directory of each file QEMU opens, then the file itself. ``granted``
    are paths svirt will chown or grant an ACL on before start (a dry run), not
    checked. Device nodes QEMU gets as copies in its private ``/dev`` are not checked
    (svirt owns the copy)."""
    ident = f"{identity.uid}:{identity.gid}" + (
        f" ({identity.user_name})" if identity.user_name else ""
    )
    plan: list[tuple[str, str, Access, list[str]]] = []
    checks: list[tuple[str, int]] = []
    for owner, path, access in resource_accesses(domain):
        if not os.path.lexists(path):
            continue  # QEMU reports a missing file itself
        real = os.path.realpath(path)
        if private_dev and real.startswith("/dev/"):
            continue
        dirs = [d for d in _parents(path) if d not in granted]
        plan.append((owner, path, access, dirs))
        checks += [(d, os.X_OK) for d in dirs]
        if real not in granted and path not in granted:
            mode = os.R_OK | (os.W_OK if access is Access.READ_WRITE else 0)
            checks.append((path, mode))
    if not checks:
        return []
    try:
        answers = dict(zip(checks, access_as(identity, checks), strict=True))
    except OSError as exc:
        log.warning("pre-flight: DAC check skipped: %s", exc)
        return []
    findings: list[DacFinding] = []
    for owner, path, access, dirs in plan:
        blocked = next((d for d in dirs if answers.get((d, os.X_OK)) == errno.EACCES), None)
        if blocked is not None:
            findings.append(
                DacFinding(
                    owner,
                    path,
                    blocked,
                    "search",
                    ident,
                    _mode_text(blocked),
                    f'setfacl -m u:{identity.uid}:x {blocked} (or dac_mode = "acl" in '
                    "svirt.conf, which grants it while the VM runs)",
                )
            )
            continue
        mode = os.R_OK | (os.W_OK if access is Access.READ_WRITE else 0)
        if answers.get((path, mode)) == errno.EACCES:
            need = "read-write" if access is Access.READ_WRITE else "read"
            perm = "rw" if access is Access.READ_WRITE else "r"
            findings.append(
                DacFinding(
                    owner,
                    path,
                    path,
                    need,
                    ident,
                    _mode_text(path),
                    f"setfacl -m u:{identity.uid}:{perm} {path} (or let svirt chown it: "
                    "dynamic_ownership = 1)",
                )
            )
    return findings


def check_before_start(
    cfg: Config,
    domain: Domain,
    driver: SELinuxDriver | None,
    *,
    labels: Mapping[str, str] | None = None,
    identity: Identity | None = None,
    daemon_context: str | None = None,
) -> list[str]:
    """The lifecycle's pre-flight: raise LaunchError on an enforcing host when QEMU
    would be denied, else return one warning line per finding (and one when the policy
    cannot be asked). ``driver`` None (no SELinux driver stacked) checks no label.

    ``labels`` are the labels of the copies in the VM's private ``/dev`` (path -> label:
    QEMU opens the copy, never the host's node); ``identity`` the QEMU user (DAC: may it
    search every parent directory and open each file?); ``daemon_context`` the context
    QEMU is started from (default: the driver's)."""
    findings: list[Finding | DacFinding] = []
    warnings: list[str] = []
    if identity is not None:
        findings += dac_findings(domain, identity)
    if driver is not None:
        oracle = driver.policy_oracle()
        if oracle is None:
            warnings.append(f"pre-flight skipped: cannot ask the policy ({driver.policy_error})")
        else:
            try:
                findings += process_findings(
                    cfg,
                    domain,
                    oracle,
                    daemon_context=daemon_context or driver.daemon_context,
                    identity=identity,
                )
                findings += preflight_check(cfg, domain, oracle, labels=labels)
            except XMLError:
                raise  # an invalid static label: a configuration error (libvirt's Verify)
            except SvirtError as exc:
                # The check is advice about the labels; its own failure must not stop a start.
                log.warning("pre-flight failed: %s", exc)
                warnings.append(f"pre-flight failed: {exc}")
    if not findings:
        return warnings
    if (driver is not None and driver.enforcing) or (
        driver is None and any(isinstance(f, DacFinding) for f in findings)
    ):
        raise LaunchError(
            "pre-flight: QEMU would be denied by SELinux: "
            + "; ".join(f.summary() for f in findings)
        )
    if any(isinstance(f, DacFinding) for f in findings):
        # DAC is enforced everywhere: QEMU would fail with a bare "Permission denied".
        raise LaunchError(
            "pre-flight: QEMU would be denied: " + "; ".join(f.summary() for f in findings)
        )
    why = (
        "SELinux is permissive: the access will be logged as a denial"
        if host_selinux.is_enabled()
        else "SELinux is off on this host; an enforcing host would refuse it"
    )
    return [*warnings, *(f"pre-flight: {f.summary()} ({why})" for f in findings)]


def preflight_summary(cfg: Config, domain: Domain) -> list[str]:
    """What QEMU would be denied with the labels ``svirt start`` would give (a dry run:
    the MCS pair drawn for it is not kept); one line per finding (``svirt validate
    --preflight``)."""
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from svirt.host.ids import resolve_identity
    from svirt.security.dac import DACDriver
    from svirt.security.manager import SecurityManager

    # The plan is made against a scratch state directory: validating writes nothing
    # (any free pair stands for the one start would draw; the policy treats them alike).
    with tempfile.TemporaryDirectory(prefix="svirt-preflight-") as scratch:
        mgr = SecurityManager(replace(cfg, state_dir=Path(scratch)))
        live, plan = mgr.dry_run(domain)
        dac = mgr.drivers.get("dac")
        identity = None
        if isinstance(dac, DACDriver):
            uid, gid = dac.process_ids(live)
            identity = resolve_identity(f"+{uid}", f"+{gid}")
        selinux_driver = mgr.selinux
    labels = {p.op.path: p.op.value for p in plan if p.op.driver == "selinux" and p.op.value}
    granted = frozenset(p.op.path for p in plan if p.op.driver != "selinux")
    out: list[str] = []
    if identity is not None:
        out += [f.summary() for f in dac_findings(live, identity, granted=granted)]
    if selinux_driver is not None:
        oracle = selinux_driver.policy_oracle()
        if oracle is not None:
            out += [
                f.summary()
                for f in process_findings(
                    cfg,
                    live,
                    oracle,
                    daemon_context=selinux_driver.daemon_context,
                    identity=identity,
                )
            ]
    out += [f.summary() for f in preflight_check(cfg, live, labels=labels)]
    return out
