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

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from svirt.audit.explain import Cause, Denial, Explanation, Fix, explain_denial
from svirt.audit.owners import LiveDomain, load_live_domains
from svirt.conf import Config
from svirt.domain.model import Domain, SeclabelType
from svirt.domain.resources import Resource, ResourceKind, domain_resources
from svirt.errors import LaunchError, SvirtError
from svirt.host import devices as host_devices
from svirt.host import selinux as host_selinux
from svirt.policy.oracle import Access, Decision, PolicyOracle, tclass_for_mode
from svirt.policy.verify import UNLABELED_CONTEXT
from svirt.security.selinux import SELinuxDriver, shared_policy_oracle

__all__ = ["Finding", "check_before_start", "preflight_check", "resource_accesses"]

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

    @property
    def cause(self) -> Cause:
        return self.explanation.cause

    def summary(self) -> str:
        """One line: what would be denied, why, and the first fix."""
        text = (
            f"{self.owner} {self.path} labelled {self.label}: {self.process_label} cannot "
            f"{self.access.value} it ({self.explanation.why})"
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
            "access": self.access.value,
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


def check_before_start(cfg: Config, domain: Domain, driver: SELinuxDriver | None) -> list[str]:
    """The lifecycle's pre-flight: raise LaunchError on an enforcing host when QEMU
    would be denied, else return one warning line per finding (and one when the policy
    cannot be asked). ``driver`` None (no SELinux driver stacked) checks nothing."""
    if driver is None:
        return []
    oracle = driver.policy_oracle()
    if oracle is None:
        return [f"pre-flight skipped: cannot ask the policy ({driver.policy_error})"]
    try:
        findings = preflight_check(cfg, domain, oracle)
    except SvirtError as exc:
        # The check is advice about the labels; its own failure must not stop a start.
        log.warning("pre-flight failed: %s", exc)
        return [f"pre-flight failed: {exc}"]
    if not findings:
        return []
    if driver.enforcing:
        raise LaunchError(
            "pre-flight: QEMU would be denied by SELinux: "
            + "; ".join(f.summary() for f in findings)
        )
    why = (
        "SELinux is permissive: the access will be logged as a denial"
        if host_selinux.is_enabled()
        else "SELinux is off on this host; an enforcing host would refuse it"
    )
    return [f"pre-flight: {f.summary()} ({why})" for f in findings]
