"""``svirt verify``: prove from the loaded policy that no running VM can reach another's.

The running domains are the live (status) XML files that svirt writes under
``<state_dir>/domains/`` and libvirt under ``/run/libvirt/qemu/``. For each domain with
an SELinux process label, and for every resource of every *other* domain, the oracle
is asked whether the process could read, and read-write, the resource with the label
it carries on disk right now. Any allowed cross-VM access is a finding, with why the
policy allows it (the label has the subject's categories, a subset of them, or none;
the process range spans them; the type pair is exempt from the MCS constraint; a
boolean grants it). Resources a domain declares read-only or shareable are listed as
shared, not as findings, and so are the resources of domains that run with one static
label (sharing by configuration, as libvirt allows). Each domain's access to its own
resources is checked too: a denial there means the VM will fail, not that isolation is
broken.

This is the fedora sVirt test page's manual check (relabel an image, watch the VM fail)
done for every pair at once, without starting anything.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as DET

from svirt.advice import Fix, boolean_fixes, own_label_fixes
from svirt.conf import Config
from svirt.context import SecurityContext, format_categories
from svirt.domain import Domain
from svirt.domain.model import SeclabelType
from svirt.domain.parse import MAX_XML_BYTES, parse_domain
from svirt.domain.resources import Resource, ResourceKind, domain_resources
from svirt.errors import ContextError, LaunchError, SvirtError
from svirt.host import selinux as host_selinux
from svirt.host.procs import pid_alive
from svirt.host.selinux import getfilecon
from svirt.policy.layers import (
    DacAccess,
    PairVerdict,
    dac_accesses,
    proc_identity,
    selinux_enforcement,
)
from svirt.policy.oracle import Access, Decision, PolicyOracle, Reason, tclass_for_mode
from svirt.policy.oracle import with_active_booleans as _with_active_booleans

__all__ = [
    "BooleanRisk",
    "CellAccess",
    "CheckedResource",
    "Exposure",
    "Finding",
    "IsolationMatrix",
    "LiveDomain",
    "MatrixCell",
    "OwnDenial",
    "SharedLabel",
    "SharedResource",
    "Skipped",
    "VerifyReport",
    "check_resources",
    "crashed_libvirt_domain",
    "find_live_domains",
    "load_live_domain",
    "select_domains",
    "verify",
    "verify_domains",
    "with_layers",
    "with_matrix",
]

log = logging.getLogger(__name__)

# Resources QEMU only reads and that libvirt labels with a shared content label.
_SHARED_KINDS = (
    ResourceKind.BACKING,
    ResourceKind.KERNEL,
    ResourceKind.INITRD,
    ResourceKind.DTB,
    ResourceKind.ACPI_TABLE,
)
# How a file without a security.selinux xattr is seen by the policy on an xattr-capable
# file system: the "file" initial SID, which the reference policy maps to unlabeled_t.
UNLABELED_CONTEXT = "system_u:object_r:unlabeled_t:s0"


class Exposure(enum.Enum):
    """Why the policy lets one VM reach another's resource."""

    SAME_CATEGORIES = "same-categories"
    SUBSET_CATEGORIES = "subset-categories"
    NO_CATEGORIES = "no-categories"
    PROCESS_RANGE = "process-range"
    UNCONSTRAINED_TYPE = "unconstrained-type"
    BOOLEAN = "boolean"
    UNLABELED_PROCESS = "unlabeled-process"


@dataclass(frozen=True, slots=True)
class LiveDomain:
    """A running domain, from its live XML."""

    name: str
    source: str  # "svirt" or "libvirt"
    xml_path: Path
    pid: int
    state: str | None
    process_label: str | None  # None: no SELinux label (seclabel type='none' or absent)
    domain: Domain = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class CheckedResource:
    """One resource of a running domain and the label it has on disk now."""

    domain: str
    owner: str  # "disk vda", "nvram", ...
    path: str
    kind: str
    tclass: str | None  # None when the path cannot be examined
    label: str | None  # current label (UNLABELED_CONTEXT when the file has none)
    shared: bool
    readonly: bool
    problem: str | None = None

    @property
    def own_access(self) -> Access:
        return Access.READ if self.readonly else Access.READ_WRITE


@dataclass(frozen=True, slots=True)
class Finding:
    """Isolation is broken: ``subject`` can reach ``resource`` of another domain (or,
    with ``resource`` None, ``subject`` runs without an SELinux label at all)."""

    subject: str
    subject_label: str | None
    resource: CheckedResource | None
    accesses: tuple[Access, ...]
    exposures: tuple[Exposure, ...]
    explanation: str
    booleans: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class OwnDenial:
    """A domain cannot use one of its own resources with the label it has now."""

    domain: str
    process_label: str
    resource: CheckedResource
    access: Access
    decision: Decision
    # issue 14: the fix that keeps isolation (svirt.advice, the rule audit explain and
    # doctor use): the VM's own label back, or the boolean's switch
    fixes: tuple[Fix, ...] = ()


@dataclass(frozen=True, slots=True)
class SharedResource:
    """A resource declared read-only or shareable, and who else can use it."""

    resource: CheckedResource
    readers: tuple[str, ...]
    writers: tuple[str, ...]

    @property
    def users(self) -> str:
        """Who else can use it, as verify prints it ("readable by a; writable by b")."""
        who = []
        if self.readers:
            who.append(f"readable by {', '.join(self.readers)}")
        if self.writers:
            who.append(f"writable by {', '.join(self.writers)}")
        return "; ".join(who) if who else "no other domain can use it"


@dataclass(frozen=True, slots=True)
class SharedLabel:
    """Running domains configured with one static label (libvirt allows it; seed 001:
    "two or more VMs with the same security context so that they can share resources"):
    each can use the others' resources by configuration, which is not an isolation
    failure. ``resources`` are the members' resources another member can use."""

    label: str
    domains: tuple[str, ...]
    resources: tuple[SharedResource, ...]


@dataclass(frozen=True, slots=True)
class BooleanRisk:
    """A cross-VM access denied today that changing a boolean would allow."""

    subject: str
    resource: CheckedResource
    access: Access
    booleans: tuple[tuple[str, bool], ...]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    policy: Path
    backend: str
    domains: tuple[LiveDomain, ...]
    resources: tuple[CheckedResource, ...]
    findings: tuple[Finding, ...]
    own_denials: tuple[OwnDenial, ...]
    shared: tuple[SharedResource, ...]
    boolean_risks: tuple[BooleanRisk, ...]
    skipped: tuple[Skipped, ...]
    decisions: int = 0
    # issue 11: both layers, for every ordered pair (None: only the policy was asked)
    pairs: tuple[PairVerdict, ...] | None = None
    dac: tuple[DacAccess, ...] = ()
    selinux_enforcing: bool = False
    # issue 14 (html): every running VM x every resource (None: not computed)
    matrix: IsolationMatrix | None = None
    # static: domains sharing one static label, and what they share (issue 14)
    shared_labels: tuple[SharedLabel, ...] = ()

    @property
    def isolated(self) -> bool:
        """What the SELinux policy decides for the labels on disk (enforced or not)."""
        return not self.findings

    @property
    def usable(self) -> bool:
        """Every running VM can use its own resources with the labels they carry now."""
        return not self.own_denials

    @property
    def separated(self) -> bool:
        """The truth: every VM is kept from every other by a layer really in force
        (the policy verdict alone where the layers were not examined)."""
        if self.pairs is None:
            return self.isolated
        return all(p.as_configured for p in self.pairs)


def _pid_alive(pid: int, start: int | None = None) -> bool:
    # A zombie has exited (its parent has not reaped it yet): not a running QEMU. svirt's
    # views carry QEMU's start time (svirt-pid-start): a pid reused since is not it.
    return pid_alive(pid, start)


def _start_of(attrs: dict[str, str]) -> int | None:
    text = attrs.get("svirt-pid-start")
    return int(text) if text is not None and text.isdigit() else None


def _root_attributes(data: bytes) -> dict[str, str]:
    try:
        root = DET.fromstring(data, forbid_dtd=True)
    except (defusedxml.DefusedXmlException, SyntaxError):
        return {}
    return dict(root.attrib) if root.tag == "domstatus" else {}


def load_live_domain(path: Path, source: str) -> LiveDomain | Skipped:
    """Read one live XML file; a Skipped says why it does not describe a running VM."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_XML_BYTES + 1)
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror}")
    attrs = _root_attributes(data)
    pid_text = attrs.get("pid")
    if pid_text is None:
        return Skipped(path, "not a status XML (no <domstatus pid=...>): cannot tell if it runs")
    try:
        pid = int(pid_text)
    except ValueError:
        return Skipped(path, f"invalid pid '{pid_text}'")
    if pid <= 0 or not _pid_alive(pid, _start_of(attrs)):
        return Skipped(path, f"not running (pid {pid} does not exist)")
    try:
        domain = parse_domain(data, inactive=False, source=str(path))
    except SvirtError as exc:
        return Skipped(path, f"cannot parse: {exc.message}")
    seclabel = domain.seclabel("selinux")
    label = None
    if seclabel is not None and seclabel.type is not SeclabelType.NONE:
        label = seclabel.label
    return LiveDomain(domain.name, source, path, pid, attrs.get("state"), label, domain)


def crashed_libvirt_domain(path: Path) -> Domain | None:
    """A libvirt status XML whose QEMU is gone (libvirtd and QEMU killed): libvirtd
    restores the domain's files when it restarts, so they are left to it."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_XML_BYTES + 1)
    except OSError:
        return None
    attrs = _root_attributes(data)
    pid_text = attrs.get("pid")
    if pid_text is None or not pid_text.isdigit() or _pid_alive(int(pid_text)):
        return None
    try:
        return parse_domain(data, inactive=False, source=str(path))
    except SvirtError:
        return None


def find_live_domains(cfg: Config) -> tuple[list[LiveDomain], list[Skipped]]:
    """svirt's live XMLs, then libvirt's (when its run directory exists)."""
    found: list[LiveDomain] = []
    skipped: list[Skipped] = []
    for source, directory in (
        ("svirt", cfg.state_dir / "domains"),
        ("libvirt", cfg.libvirt_run_dir),
    ):
        try:
            paths = sorted(p for p in directory.iterdir() if p.suffix == ".xml")
        except FileNotFoundError:
            continue
        except OSError as exc:
            skipped.append(Skipped(directory, f"cannot list: {exc.strerror}"))
            continue
        for path in paths:
            result = load_live_domain(path, source)
            if isinstance(result, Skipped):
                skipped.append(result)
            else:
                found.append(result)
    return found, skipped


def _examine(domain: str, res: Resource) -> CheckedResource:
    assert res.path is not None
    shared = res.readonly or res.shareable or res.kind in _SHARED_KINDS
    readonly = res.readonly or res.kind in _SHARED_KINDS
    base = CheckedResource(
        domain=domain,
        owner=res.owner,
        path=res.path,
        kind=res.kind.value,
        tclass=None,
        label=None,
        shared=shared,
        readonly=readonly,
    )
    try:
        st = os.stat(res.path)
        label = getfilecon(res.path)
    except OSError as exc:
        return replace(base, problem=f"cannot examine: {exc.strerror}")
    problem = None
    if label is None:
        label = UNLABELED_CONTEXT
        problem = f"no SELinux label (seen as {UNLABELED_CONTEXT})"
    return replace(base, tclass=tclass_for_mode(st.st_mode), label=label, problem=problem)


def check_resources(domain: LiveDomain, display: str | None = None) -> list[CheckedResource]:
    """The domain's local resources with a path, each once, with its current label.
    ``display`` is the name to record as their domain (default: the domain's name)."""
    seen: set[str] = set()
    out: list[CheckedResource] = []
    for res in domain_resources(domain.domain):
        if res.path is None or not res.local or res.path in seen:
            continue
        seen.add(res.path)
        out.append(_examine(display or domain.name, res))
    return out


def _classify(
    subject_name: str,
    subject_label: str,
    resource: CheckedResource,
    owners: dict[frozenset[int], list[str]],
    booleans: tuple[tuple[str, bool], ...],
) -> tuple[tuple[Exposure, ...], str]:
    """Why an allowed cross-VM access is allowed, and a clause saying so."""
    assert resource.label is not None
    exposures: list[Exposure] = []
    parts: list[str] = []
    try:
        s_ctx: SecurityContext | None = SecurityContext.parse(subject_label)
        o_ctx: SecurityContext | None = SecurityContext.parse(resource.label)
    except ContextError:
        s_ctx = o_ctx = None  # the policy accepted it; our parser is stricter
    if s_ctx is None or o_ctx is None or s_ctx.range is None or o_ctx.range is None:
        exposures.append(Exposure.UNCONSTRAINED_TYPE)
        parts.append("the policy allows it without an MLS/MCS level check")
    else:
        s_low, s_high, o_high = s_ctx.range.low, s_ctx.range.high, o_ctx.range.high
        cats = o_high.categories
        if s_low.dominates(o_high):
            if not cats:
                exposures.append(Exposure.NO_CATEGORIES)
                parts.append(f"the label has no categories ({o_high}), so every VM dominates it")
            elif cats == s_low.categories:
                exposures.append(Exposure.SAME_CATEGORIES)
                parts.append(
                    f"the label carries {subject_name}'s own categories {format_categories(cats)}"
                )
            else:
                exposures.append(Exposure.SUBSET_CATEGORIES)
                parts.append(
                    f"the label's categories {format_categories(cats)} are a subset of "
                    f"{subject_name}'s {format_categories(s_low.categories)}"
                )
            others = [n for n in owners.get(cats, []) if n not in (subject_name, resource.domain)]
            if cats and others:
                parts.append(f"they are also the categories of {', '.join(others)}")
        elif s_high.dominates(o_high):
            exposures.append(Exposure.PROCESS_RANGE)
            parts.append(
                f"{subject_name} runs with the range {s_ctx.range}, whose high level "
                "dominates the label"
            )
        else:
            exposures.append(Exposure.UNCONSTRAINED_TYPE)
            parts.append(
                f"the policy exempts {s_ctx.type} -> {o_ctx.type} from the MCS constraint "
                "(the process type is not mcs_constrained_type, or the target type is exempt)"
            )
    if booleans:
        exposures.append(Exposure.BOOLEAN)
        names = ", ".join(f"{n}={'on' if v else 'off'}" for n, v in booleans)
        parts.append(f"a conditional rule grants it while {names}")
    return tuple(exposures), "; ".join(parts)


def _display_names(domains: Sequence[LiveDomain]) -> list[str]:
    """Domain names, qualified by source where svirt and libvirt use the same name."""
    counts: dict[str, int] = {}
    for d in domains:
        counts[d.name] = counts.get(d.name, 0) + 1
    return [d.name if counts[d.name] == 1 else f"{d.name} ({d.source})" for d in domains]


def _own_fixes(
    subject: LiveDomain,
    name: str,
    res: CheckedResource,
    decision: Decision,
    config: str | None,
) -> tuple[Fix, ...]:
    """The fix for a VM denied its own resource (svirt.advice's rule)."""
    if decision.reason is Reason.BOOLEAN:
        return boolean_fixes(decision.booleans)
    sl = subject.domain.seclabel("selinux")
    if res.shared or sl is None or not sl.imagelabel or res.label == sl.imagelabel:
        return ()  # shared media carry a label of their own, not the VM's
    return own_label_fixes(
        name, res.path, sl.imagelabel, res.label, config=config, recoverable=sl.relabel
    )


def verify_domains(
    domains: Sequence[LiveDomain],
    oracle: PolicyOracle,
    skipped: Iterable[Skipped] = (),
    *,
    config: str | None = None,
) -> VerifyReport:
    """The isolation matrix of ``domains`` under ``oracle``'s policy."""
    names = _display_names(domains)
    resources = [check_resources(d, n) for d, n in zip(domains, names, strict=True)]
    usable = [[r for r in rs if r.label is not None and r.tclass is not None] for rs in resources]
    owners: dict[frozenset[int], list[str]] = {}
    for dom, dom_name in zip(domains, names, strict=True):
        if dom.process_label is None:
            continue
        try:
            ctx = SecurityContext.parse(dom.process_label)
        except ContextError:
            continue
        if ctx.range is not None:
            owners.setdefault(ctx.range.low.categories, []).append(dom_name)

    group_of = _static_groups(domains, names)
    findings: list[Finding] = []
    own: list[OwnDenial] = []
    risks: list[BooleanRisk] = []
    readers: dict[tuple[str, str], list[str]] = {}
    writers: dict[tuple[str, str], list[str]] = {}
    by_label: dict[tuple[str, str], CheckedResource] = {}
    before = oracle.cache_info()

    for i, subject in enumerate(domains):
        name, label = names[i], subject.process_label
        if label is None:
            findings.append(
                Finding(
                    subject=name,
                    subject_label=None,
                    resource=None,
                    accesses=(Access.READ, Access.READ_WRITE),
                    exposures=(Exposure.UNLABELED_PROCESS,),
                    explanation=(
                        f"{name} has no SELinux process label (seclabel type='none' "
                        "or no selinux seclabel): its QEMU is not confined by sVirt"
                    ),
                )
            )
            continue
        for res in usable[i]:
            assert res.label is not None and res.tclass is not None
            decision = oracle.file_access(label, res.label, res.own_access, res.tclass)
            if not decision.allowed:
                fixes = _own_fixes(subject, name, res, decision, config)
                own.append(OwnDenial(name, label, res, res.own_access, decision, fixes))
        for j in range(len(domains)):
            if j == i:
                continue
            for res in usable[j]:
                assert res.label is not None and res.tclass is not None
                read = oracle.file_access(label, res.label, Access.READ, res.tclass)
                write = oracle.file_access(label, res.label, Access.READ_WRITE, res.tclass)
                if res.shared:
                    key = (res.domain, res.path)
                    if read.allowed:
                        readers.setdefault(key, []).append(name)
                    if write.allowed:
                        writers.setdefault(key, []).append(name)
                    continue
                allowed = tuple(
                    a for a, dec in ((Access.READ, read), (Access.READ_WRITE, write)) if dec.allowed
                )
                if allowed:
                    strongest = allowed[-1]
                    booleans = oracle.granting_booleans(
                        label, res.label, res.tclass, strongest.perms(res.tclass)
                    )
                    exposures, text = _classify(name, label, res, owners, booleans)
                    group = group_of.get(name)
                    if (
                        group is not None
                        and group == group_of.get(res.domain)
                        and exposures == (Exposure.SAME_CATEGORIES,)
                    ):
                        # Both set this static label: sharing by configuration.
                        key = (res.domain, res.path)
                        by_label[key] = res
                        readers.setdefault(key, []).append(name)
                        if Access.READ_WRITE in allowed:
                            writers.setdefault(key, []).append(name)
                        continue
                    findings.append(
                        Finding(
                            subject=name,
                            subject_label=label,
                            resource=res,
                            accesses=allowed,
                            exposures=exposures,
                            explanation=(
                                f"{name} ({label}) can {strongest.value} {res.domain}'s "
                                f"{res.owner} {res.path} labelled {res.label}: {text}"
                            ),
                            booleans=booleans,
                        )
                    )
                    continue
                for access, dec in ((Access.READ, read), (Access.READ_WRITE, write)):
                    if dec.reason is Reason.BOOLEAN:
                        risks.append(BooleanRisk(name, res, access, dec.booleans))
                        break

    shared = tuple(
        SharedResource(
            r,
            tuple(readers.get((r.domain, r.path), ())),
            tuple(writers.get((r.domain, r.path), ())),
        )
        for rs in resources
        for r in rs
        if r.shared
    )
    shared_labels = tuple(
        SharedLabel(
            group,
            tuple(n for n in names if group_of.get(n) == group),
            tuple(
                SharedResource(r, tuple(readers[k]), tuple(writers.get(k, ())))
                for k, r in by_label.items()
                if group_of.get(r.domain) == group
            ),
        )
        for group in dict.fromkeys(group_of.values())
    )
    after = oracle.cache_info()
    return VerifyReport(
        policy=oracle.path,
        backend=oracle.backend,
        domains=tuple(domains),
        resources=tuple(r for rs in resources for r in rs),
        findings=tuple(findings),
        own_denials=tuple(own),
        shared=shared,
        boolean_risks=tuple(risks),
        skipped=tuple(skipped),
        decisions=(after.hits + after.misses) - (before.hits + before.misses),
        shared_labels=shared_labels,
    )


def _static_groups(domains: Sequence[LiveDomain], names: Sequence[str]) -> dict[str, str]:
    """Display name → static label, for the domains that run with a static label at
    least one other running domain also has (compared as parsed contexts)."""
    by_label: dict[str, list[str]] = {}
    for dom, name in zip(domains, names, strict=True):
        sl = dom.domain.seclabel("selinux")
        if sl is None or sl.type is not SeclabelType.STATIC or dom.process_label is None:
            continue
        try:
            key = str(SecurityContext.parse(dom.process_label))
        except ContextError:
            key = dom.process_label
        by_label.setdefault(key, []).append(name)
    return {n: label for label, members in by_label.items() if len(members) > 1 for n in members}


def with_layers(report: VerifyReport) -> VerifyReport:
    """Add both layers to a policy report (issue 11): for every ordered pair of running
    domains, whether SELinux would separate them and enforces it, and whether plain DAC
    separates them now (their QEMUs' real identities against the files and memory)."""
    domains = report.domains
    names = _display_names(domains)
    idents = [proc_identity(d.pid) for d in domains]
    private: dict[str, list[str]] = {}
    for r in report.resources:
        if not r.shared:
            private.setdefault(r.domain, []).append(r.path)
    crossing = {
        (f.subject, f.resource.domain)
        for f in report.findings
        if f.resource is not None and f.subject_label is not None
    }
    unlabelled = {f.subject for f in report.findings if f.subject_label is None}
    shared_with: dict[tuple[str, str], str] = {}
    for group in report.shared_labels:
        for s in group.resources:
            for reader in s.readers:
                shared_with[(reader, s.resource.domain)] = group.label
    pairs: list[PairVerdict] = []
    dac: list[DacAccess] = []
    for i, subject in enumerate(domains):
        enforcement = selinux_enforcement(subject.pid, subject.process_label)
        for j in range(len(domains)):
            if i == j:
                continue
            ident = idents[i]
            if ident is None:  # gone meanwhile: it reaches nothing
                found: list[DacAccess] = []
            else:
                found = dac_accesses(
                    names[i], ident, names[j], idents[j], private.get(names[j], [])
                )
            dac.extend(found)
            label = shared_with.get((names[i], names[j]))
            pairs.append(
                PairVerdict(
                    names[i],
                    names[j],
                    names[i] not in unlabelled
                    and (names[i], names[j]) not in crossing
                    and label is None,
                    enforcement.enforced,
                    not found,
                    shared_label=label,
                )
            )
    return replace(
        report,
        pairs=tuple(pairs),
        dac=tuple(dac),
        selinux_enforcing=host_selinux.getenforce(),
    )


def verify(
    cfg: Config, oracle: PolicyOracle | None = None, names: Sequence[str] | None = None
) -> VerifyReport:
    """Find the running domains from ``cfg`` and check them: the policy's matrix, then
    both layers (:func:`with_layers`) and every cell (:func:`with_matrix`). ``names``:
    only these running domains, each against every other (:func:`select_domains`); an
    unknown name raises libvirt's "failed to get domain 'NAME'"."""
    if oracle is None:
        oracle = _with_active_booleans(PolicyOracle(cfg.policy_path))
    domains, skipped = find_live_domains(cfg)
    for s in skipped:
        log.debug("verify: skipping %s: %s", s.path, s.reason)
    if names:
        _check_names(domains, names)
    report = with_matrix(
        with_layers(verify_domains(domains, oracle, skipped, config=cfg.source)), oracle, names
    )
    return select_domains(report, names) if names else report


# --- issue 14 (html): `svirt verify NAME...` and the isolation matrix -----------------


class CellAccess(enum.Enum):
    """The policy's decision for one VM on one resource (the strongest access allowed)."""

    READ_WRITE = "read-write"
    READ = "read"
    NONE = "none"
    UNKNOWN = "unknown"  # not asked: the file cannot be examined, or the VM is unconfined


@dataclass(frozen=True, slots=True)
class MatrixCell:
    """What ``subject``'s QEMU may do to one resource, by both layers."""

    subject: str
    resource: CheckedResource
    access: CellAccess
    reason: str  # the policy's decision and why
    own: bool  # the subject's own resource
    finding: bool  # isolation broken: verify reports it as a finding
    own_denial: bool  # the VM cannot use its own resource as it needs to
    dac: str | None  # what plain DAC allows on another VM's private file, None: nothing
    dac_reason: str


@dataclass(frozen=True, slots=True)
class IsolationMatrix:
    """Rows: running VMs (display names); columns: every resource of every running VM,
    grouped by owner in the order of the domains; ``cells`` row by row."""

    rows: tuple[str, ...]
    columns: tuple[CheckedResource, ...]
    cells: tuple[MatrixCell, ...]

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.domain for r in self.columns))

    def row(self, subject: str) -> tuple[MatrixCell, ...]:
        i = self.rows.index(subject)
        n = len(self.columns)
        return self.cells[i * n : (i + 1) * n]


def _check_names(domains: Sequence[LiveDomain], names: Sequence[str]) -> None:
    running = {d.name for d in domains}
    for name in names:
        if name not in running:
            raise LaunchError(f"failed to get domain '{name}'")


_Key = tuple[str, str | None, str | None]  # subject, resource's domain and path


def _cell(
    subject: str,
    label: str | None,
    res: CheckedResource,
    oracle: PolicyOracle,
    findings: dict[_Key, Finding],
    own_denials: set[tuple[str, str]],
    dac: dict[tuple[str, str, str], DacAccess],
    dac_examined: bool,
) -> MatrixCell:
    own = res.domain == subject
    finding = findings.get((subject, res.domain, res.path)) or findings.get((subject, None, None))
    own_denial = own and (subject, res.path) in own_denials
    where = f"{subject} on {res.domain}'s {res.owner} {res.path}"
    if label is None:
        access, reason = (
            CellAccess.UNKNOWN,
            f"{where}: {subject} has no SELinux process label: its QEMU is not confined by "
            "sVirt, the policy does not apply",
        )
    elif res.label is None or res.tclass is None:
        access, reason = CellAccess.UNKNOWN, f"{where}: {res.problem or 'cannot examine'}"
    else:
        read = oracle.file_access(label, res.label, Access.READ, res.tclass)
        write = oracle.file_access(label, res.label, Access.READ_WRITE, res.tclass)
        if write.allowed:
            access, verdict = CellAccess.READ_WRITE, "the policy allows read-write"
        elif read.allowed:
            access = CellAccess.READ
            verdict = f"the policy allows read; read-write {write.describe()}"
        else:
            access, verdict = CellAccess.NONE, f"read {read.describe()}"
        reason = f"{where} ({label} on {res.label}): {verdict}"
    if finding is not None and finding.resource is not None:
        reason += f". Isolation broken: {finding.explanation}"
    elif own_denial:
        reason += f". {subject} cannot {res.own_access.value} its own resource: the VM will fail"
    elif res.shared and not own:
        reason += ". Shared: declared read-only or shareable"
    if own:
        dac_access, dac_reason = None, "DAC: not examined (the VM's own resource)"
    elif res.shared:
        dac_access, dac_reason = None, "DAC: not examined (read-only or shareable media)"
    elif not dac_examined:
        dac_access, dac_reason = None, "DAC: not examined"
    else:
        found = dac.get((subject, res.domain, res.path))
        if found is None:
            dac_access, dac_reason = None, "DAC denies it"
        else:
            dac_access = found.what
            dac_reason = f"DAC allows {found.what} ({found.identity}): {found.why}"
    return MatrixCell(
        subject=subject,
        resource=res,
        access=access,
        reason=reason,
        own=own,
        finding=finding is not None and not own,
        own_denial=own_denial,
        dac=dac_access,
        dac_reason=dac_reason,
    )


def with_matrix(
    report: VerifyReport, oracle: PolicyOracle, names: Sequence[str] | None = None
) -> VerifyReport:
    """Add the isolation matrix: for each running VM (only those in ``names`` when
    given) and every resource of every running VM, the strongest access the policy
    allows with the labels on disk now, why, and what DAC allows (from
    :func:`with_layers`). The same oracle answers, so a cell agrees with the findings."""
    display = _display_names(report.domains)
    dac = {(a.subject, a.target, a.path): a for a in report.dac if a.what != "memory"}
    findings: dict[_Key, Finding] = {
        (f.subject, f.resource.domain, f.resource.path)
        if f.resource is not None
        else (f.subject, None, None): f
        for f in report.findings
    }
    own_denials = {(o.domain, o.resource.path) for o in report.own_denials}
    rows: list[str] = []
    cells: list[MatrixCell] = []
    for dom, name in zip(report.domains, display, strict=True):
        if names and dom.name not in names:
            continue
        rows.append(name)
        cells.extend(
            _cell(
                name,
                dom.process_label,
                r,
                oracle,
                findings,
                own_denials,
                dac,
                report.pairs is not None,
            )
            for r in report.resources
        )
    matrix = IsolationMatrix(tuple(rows), report.resources, tuple(cells))
    return replace(report, matrix=matrix)


def select_domains(report: VerifyReport, names: Sequence[str]) -> VerifyReport:
    """The report of the running domains called ``names`` only: their findings and
    denials, those of others on their resources, their pairs (both directions). The
    resources stay all running domains' (each named VM was checked against them)."""
    keep = {
        n
        for d, n in zip(report.domains, _display_names(report.domains), strict=True)
        if d.name in names
    }

    def mine(*who: str | None) -> bool:
        return any(w in keep for w in who)

    return replace(
        report,
        domains=tuple(d for d in report.domains if d.name in names),
        findings=tuple(
            f for f in report.findings if mine(f.subject, f.resource.domain if f.resource else None)
        ),
        own_denials=tuple(o for o in report.own_denials if mine(o.domain)),
        shared=tuple(s for s in report.shared if mine(s.resource.domain, *s.readers, *s.writers)),
        boolean_risks=tuple(b for b in report.boolean_risks if mine(b.subject, b.resource.domain)),
        pairs=None
        if report.pairs is None
        else tuple(p for p in report.pairs if mine(p.subject, p.target)),
        dac=tuple(a for a in report.dac if mine(a.subject, a.target)),
    )
