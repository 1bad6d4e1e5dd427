"""``svirt audit explain``: why each SELinux denial happened, and the fix that keeps isolation.

For each distinct denial (same source and target contexts, class, permissions and object;
repeats are counted) it answers:

1. **Did SELinux cause it?** Enforcing denials (``permissive=0``) refused the access;
   the SYSCALL record shows the error the program saw. Permissive ones were only logged.
   A record without the field (older kernels) is "unknown": never taken as enforcing.
2. **Why?** From the real binary policy through the policy oracle (audit2why's reasons):
   type enforcement (no allow rule), an MCS/MLS constraint, a boolean, a dontaudit rule,
   RBAC, bounds, or "allowed now". Without a policy (or when the policy does not know a
   context), from the contexts alone: MCS dominance, and what the reference policy lets
   ``svirt_t`` use.
3. **Which VM?** The process's categories name the running domain (svirt's and libvirt's
   live XML), or QEMU's ``-name guest=NAME``; the target's categories name the VM the file
   is labelled for.
4. **Which file, and what does it carry now?** From the AVC's ``path``, the event's PATH
   records, or the VM's disks (same file name, confirmed by inode); its current label and
   the original label libvirt/svirt remembered (``trusted.libvirt.security.*``).
5. **The fix that keeps isolation**: let svirt/libvirt label the image (``relabel='yes'``
   or a per-disk ``<seclabel>``), ``chcon -l``/``semanage fcontext`` + ``restorecon``, a
   boolean for NFS, ``<shareable/>`` for disks meant to be shared. Never ``audit2allow``
   for an MCS denial, and the reason why is printed with it.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from svirt.advice import DRIFT_DO_NOT, Fix, boolean_fixes, own_label_fixes
from svirt.audit.events import Event
from svirt.audit.owners import LiveDomain, domain_of_pid, owners_of
from svirt.audit.records import (
    AvcInfo,
    SyscallInfo,
    parse_avc,
    parse_cwd,
    parse_path,
    parse_proctitle,
    parse_syscall,
)
from svirt.context import Level, SecurityContext, format_categories
from svirt.errors import ContextError, PolicyError
from svirt.host.remembered import read_family, xattr_names

__all__ = [
    "XATTR_REF",
    "XATTR_REMEMBERED",
    "XATTR_TIMESTAMP",
    "Cause",
    "Denial",
    "Explanation",
    "FileFacts",
    "Fix",
    "McsFacts",
    "Remembered",
    "collect_denials",
    "explain",
    "explain_denial",
    "read_remembered",
]

log = logging.getLogger(__name__)

XATTR_REMEMBERED, XATTR_REF, XATTR_TIMESTAMP = xattr_names("selinux")

# Process types of QEMU guests (sVirt): one type for all VMs, categories tell them apart.
VIRT_DOMAIN_TYPES = frozenset({"svirt_t", "svirt_tcg_t", "svirt_kvm_net_t", "svirt_qemu_net_t"})
# What the reference policy lets svirt_t read and write (with matching categories).
VIRT_IMAGE_TYPES = frozenset({"svirt_image_t", "svirt_tmpfs_t", "svirt_home_t"})
VIRT_READONLY_TYPES = frozenset({"virt_content_t", "public_content_t"})
# Image-store types libvirt relabels from at start (the file is not labelled for a VM).
IMAGE_STORE_TYPES = frozenset({"virt_image_t", "virt_var_lib_t"})
# Filesystems without per-file labels, with the boolean that lets VMs use them.
FS_BOOLEANS = {
    "nfs_t": "virt_use_nfs",
    "cifs_t": "virt_use_samba",
    "fusefs_t": "virt_use_fusefs",
    "usb_device_t": "virt_use_usb",
}
_FILE_CLASSES = frozenset(
    {"file", "dir", "blk_file", "chr_file", "lnk_file", "sock_file", "fifo_file"}
)


class Cause(enum.Enum):
    """Why SELinux denied the access."""

    TYPE_ENFORCEMENT = "type-enforcement"
    MCS = "mcs"
    CONSTRAINT = "constraint"
    BOOLEAN = "boolean"
    DONTAUDIT = "dontaudit"
    RBAC = "rbac"
    BOUNDS = "bounds"
    ALLOWED_NOW = "allowed-now"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Denial:
    """One distinct denial and how often it was logged."""

    scontext: str
    tcontext: str
    tclass: str
    perms: tuple[str, ...]
    denied: bool
    permissive: bool | None
    user_space: bool
    comm: str | None
    exe: str | None
    pids: tuple[int, ...]
    name: str | None
    path: str | None
    dev: str | None
    ino: int | None
    count: int
    first: float
    last: float
    serials: tuple[int, ...]
    syscall: str | None = None
    errno_name: str | None = None
    syscall_success: bool | None = None
    proctitle: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, frozenset[str], str | None, bool | None, bool]:
        return (
            self.scontext,
            self.tcontext,
            self.tclass,
            frozenset(self.perms),
            self.path or self.name,
            self.permissive,
            self.user_space,
        )


@dataclass(frozen=True, slots=True)
class Remembered:
    """What libvirt/svirt remembered on the file (absent attributes are None)."""

    label: str | None
    refcount: int | None
    timestamp: int | None


@dataclass(frozen=True, slots=True)
class FileFacts:
    """The target file as it is now on this host."""

    path: str
    how: str  # how the path was found
    exists: bool
    label: str | None = None
    inode: int | None = None
    inode_matches: bool | None = None
    remembered: Remembered | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class McsFacts:
    """The MCS comparison of the two contexts (high levels, as the constraint uses)."""

    source_level: str
    target_level: str
    dominates: bool
    missing: str  # categories the target has and the process lacks ("" if none)


@dataclass(frozen=True, slots=True)
class Explanation:
    denial: Denial
    selinux_caused: bool | None  # None: the record does not say (no permissive= field)
    mode: str  # enforcing | permissive | granted | unknown (permissive not recorded)
    outcome: str  # one line: what the program saw
    cause: Cause
    why: str
    basis: str  # "policy <path>" or "contexts"
    policy_reason: str | None = None
    booleans: tuple[tuple[str, bool], ...] = ()
    constraint: str | None = None
    mcs: McsFacts | None = None
    vm: str | None = None
    vm_source: str | None = None
    vm_domain: LiveDomain | None = None
    target_vms: tuple[str, ...] = ()
    file: FileFacts | None = None
    fixes: tuple[Fix, ...] = ()
    do_not: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = self.denial
        return {
            "denial": {
                "scontext": d.scontext,
                "tcontext": d.tcontext,
                "tclass": d.tclass,
                "perms": list(d.perms),
                "comm": d.comm,
                "exe": d.exe,
                "pids": list(d.pids),
                "name": d.name,
                "path": d.path,
                "dev": d.dev,
                "ino": d.ino,
                "count": d.count,
                "first": d.first,
                "last": d.last,
                "serials": list(d.serials),
                "permissive": d.permissive,
                "syscall": d.syscall,
                "errno": d.errno_name,
                "user_space": d.user_space,
            },
            "selinux_caused": self.selinux_caused,
            "mode": self.mode,
            "outcome": self.outcome,
            "cause": self.cause.value,
            "why": self.why,
            "basis": self.basis,
            "policy_reason": self.policy_reason,
            "booleans": [{"name": n, "value": v} for n, v in self.booleans],
            "constraint": self.constraint,
            "mcs": None
            if self.mcs is None
            else {
                "source_level": self.mcs.source_level,
                "target_level": self.mcs.target_level,
                "dominates": self.mcs.dominates,
                "missing": self.mcs.missing,
            },
            "vm": self.vm,
            "vm_source": self.vm_source,
            "target_vms": list(self.target_vms),
            "file": None
            if self.file is None
            else {
                "path": self.file.path,
                "how": self.file.how,
                "exists": self.file.exists,
                "label": self.file.label,
                "inode": self.file.inode,
                "inode_matches": self.file.inode_matches,
                "error": self.file.error,
                "remembered": None
                if self.file.remembered is None
                else {
                    "label": self.file.remembered.label,
                    "refcount": self.file.remembered.refcount,
                    "timestamp": self.file.remembered.timestamp,
                },
            },
            "fixes": [{"text": f.text, "command": f.command} for f in self.fixes],
            "do_not": self.do_not,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------
# Collecting denials from events


_MAX_SERIALS = 20


@dataclass(slots=True)
class _Acc:
    info: AvcInfo
    perms: dict[str, None]
    pids: dict[int, None]
    path: str | None
    count: int
    first: float
    last: float
    serials: list[int]
    syscall: SyscallInfo | None
    proctitle: tuple[str, ...]


def _event_path(event: Event, avc: AvcInfo) -> str | None:
    """The object's path: the AVC's path=, else the PATH record for its inode/name."""
    if avc.path:
        return avc.path
    cwd: str | None = None
    candidates: list[str] = []
    for rec in event.records:
        if rec.type == "CWD":
            cwd = parse_cwd(rec)
        elif rec.type == "PATH":
            p = parse_path(rec)
            if p is None or p.name is None:
                continue
            if avc.ino is not None and p.inode == avc.ino:
                candidates.insert(0, p.name)
            elif avc.name and os.path.basename(p.name) == avc.name:
                candidates.append(p.name)
    if not candidates:
        return None
    name = candidates[0]
    if not name.startswith("/") and cwd:
        name = os.path.normpath(os.path.join(cwd, name))
    return name


def collect_denials(events: Iterable[Event]) -> list[Denial]:
    """Distinct AVC/USER_AVC decisions in the events, repeats counted, in first-seen order."""
    acc: dict[tuple[Any, ...], _Acc] = {}
    for event in events:
        syscall: SyscallInfo | None = None
        proctitle: tuple[str, ...] = ()
        avcs: list[AvcInfo] = []
        for rec in event.records:
            if rec.type in ("AVC", "USER_AVC"):
                info = parse_avc(rec)
                if info is not None and info.scontext and info.tcontext and info.tclass:
                    avcs.append(info)
            elif rec.type == "SYSCALL":
                syscall = parse_syscall(rec)
            elif rec.type == "PROCTITLE":
                proctitle = tuple(parse_proctitle(rec))
        for info in avcs:
            path = _event_path(event, info)
            # The permissions are part of the key: the policy's answer is for a record's
            # own permissions (a permitted { getattr } and a denied { read } of one file
            # have different reasons), so a group never mixes reasons; grouping is only
            # for display.
            key = (
                info.scontext,
                info.tcontext,
                info.tclass,
                frozenset(info.perms),
                path or info.name,
                info.permissive,
                info.user_space,
                info.denied,
            )
            a = acc.get(key)
            if a is None:
                a = acc[key] = _Acc(info, {}, {}, path, 0, event.time, event.time, [], None, ())
            a.count += 1
            a.perms.update(dict.fromkeys(info.perms))
            if info.pid is not None:
                a.pids[info.pid] = None
            a.first = min(a.first, event.time)
            a.last = max(a.last, event.time)
            if len(a.serials) < _MAX_SERIALS and event.serial not in a.serials:
                a.serials.append(event.serial)
            if a.syscall is None and syscall is not None:
                a.syscall = syscall
            if not a.proctitle and proctitle:
                a.proctitle = proctitle
            if a.path is None and path is not None:
                a.path = path
    out: list[Denial] = []
    for a in acc.values():
        i = a.info
        sc = a.syscall
        out.append(
            Denial(
                scontext=i.scontext or "",
                tcontext=i.tcontext or "",
                tclass=i.tclass or "",
                perms=tuple(a.perms),
                denied=i.denied,
                permissive=i.permissive,
                user_space=i.user_space,
                comm=i.comm or (sc.comm if sc else None),
                exe=i.exe or (sc.exe if sc else None),
                pids=tuple(a.pids),
                name=i.name,
                path=a.path,
                dev=i.dev,
                ino=i.ino,
                count=a.count,
                first=a.first,
                last=a.last,
                serials=tuple(a.serials),
                syscall=sc.syscall if sc else None,
                errno_name=sc.errno_name if sc else None,
                syscall_success=sc.success if sc else None,
                proctitle=a.proctitle,
            )
        )
    return out


# ---------------------------------------------------------------------------------------
# Facts about the host


def read_remembered(path: str) -> Remembered:
    """libvirt's remembered SELinux label, refcount and boot timestamp of a file (read
    through the one codec of remembered state, :mod:`svirt.host.remembered`)."""
    r = read_family(path, "selinux")
    if r is None:
        return Remembered(label=None, refcount=None, timestamp=None)
    stamp = r.timestamp.rsplit("-", 1)[-1] if r.timestamp is not None else None
    return Remembered(
        label=None if r.original is None else r.original.rstrip("\0"),
        refcount=r.refcount,
        timestamp=int(stamp) if stamp is not None and stamp.isdigit() else None,
    )


def _file_facts(path: str, how: str, ino: int | None) -> FileFacts:
    from svirt.host.selinux import getfilecon

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return FileFacts(path=path, how=how, exists=False)
    except OSError as exc:
        return FileFacts(path=path, how=how, exists=False, error=exc.strerror or str(exc))
    try:
        label = getfilecon(path)
        remembered = read_remembered(path)
    except OSError as exc:
        return FileFacts(
            path=path, how=how, exists=True, inode=st.st_ino, error=exc.strerror or str(exc)
        )
    return FileFacts(
        path=path,
        how=how,
        exists=True,
        label=label,
        inode=st.st_ino,
        inode_matches=None if ino is None else st.st_ino == ino,
        remembered=remembered,
    )


def _vm_from_proctitle(argv: Sequence[str]) -> str | None:
    """QEMU's ``-name guest=NAME,process=qemu:NAME,...`` (or ``-name NAME``)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-name":
            parts = _qemu_options(argv[i + 1])
            for part in parts:
                if part.startswith("guest="):
                    return part[6:] or None
            return parts[0] or None
    return None


_COMM_BYTES = 15  # the kernel's TASK_COMM_LEN less its NUL


def _vm_from_title(
    comm: str | None, domains: Sequence[LiveDomain]
) -> tuple[str | None, str | None]:
    """The VM named by QEMU's title ``qemu:NAME`` (svirt's ``-name ...,process=``); the
    kernel keeps 15 bytes, so a full-length title is matched as a prefix of the running
    domains' names, and names no VM when none or several match."""
    if not comm or not comm.startswith("qemu:") or len(comm) == 5:
        return None, None
    name = comm[5:]
    if len(comm.encode()) < _COMM_BYTES:
        return name, "QEMU's process title (comm=qemu:NAME)"
    found = [dom.name for dom in domains if dom.name.startswith(name)]
    if len(found) == 1:
        return found[0], "QEMU's process title (comm=qemu:NAME, cut to 15 bytes) and live XML"
    return None, None


def _qemu_options(value: str) -> list[str]:
    """A QEMU option value cut at its commas; ``,,`` is a literal comma."""
    parts = [""]
    i = 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1 : i + 2] == ",":
                parts[-1] += ","
                i += 2
                continue
            parts.append("")
        else:
            parts[-1] += value[i]
        i += 1
    return parts


# ---------------------------------------------------------------------------------------
# The explanation


def _ctx(text: str) -> SecurityContext | None:
    try:
        return SecurityContext.parse(text)
    except ContextError:
        return None


def _mcs(scon: SecurityContext | None, tcon: SecurityContext | None) -> McsFacts | None:
    if scon is None or tcon is None or scon.range is None or tcon.range is None:
        return None
    sh: Level = scon.range.high
    th: Level = tcon.range.high
    missing = th.categories - sh.categories
    return McsFacts(
        source_level=str(scon.range),
        target_level=str(tcon.range),
        dominates=sh.dominates(th),
        missing=format_categories(frozenset(missing)) if missing else "",
    )


_MCS_TERMS = ("h1 dom h2", "l1 dom l2", "l1 domby", "h1 domby", "mcs_constrained", "mlsconstrain")


def _policy_cause(decision: Any) -> Cause:
    from svirt.policy.oracle import Reason

    reason = decision.reason
    if reason is Reason.ALLOW:
        return Cause.ALLOWED_NOW
    if reason is Reason.DONTAUDIT:
        return Cause.DONTAUDIT
    if reason is Reason.TERULE:
        return Cause.TYPE_ENFORCEMENT
    if reason is Reason.BOOLEAN:
        return Cause.BOOLEAN
    if reason is Reason.CONSTRAINT:
        text = decision.constraint or ""
        return Cause.MCS if any(t in text for t in _MCS_TERMS) else Cause.CONSTRAINT
    if reason is Reason.RBAC:
        return Cause.RBAC
    if reason is Reason.BOUNDS:
        return Cause.BOUNDS
    return Cause.UNKNOWN


def _context_cause(
    scon: SecurityContext | None, tcon: SecurityContext | None, mcs: McsFacts | None
) -> tuple[Cause, tuple[tuple[str, bool], ...]]:
    """The likely cause from the contexts alone (no policy, or contexts it does not know)."""
    if mcs is not None and not mcs.dominates:
        return Cause.MCS, ()
    if scon is None or tcon is None:
        return Cause.UNKNOWN, ()
    if scon.type in VIRT_DOMAIN_TYPES:
        boolean = FS_BOOLEANS.get(tcon.type)
        if boolean is not None:
            return Cause.BOOLEAN, ((boolean, True),)
        if tcon.type not in VIRT_IMAGE_TYPES | VIRT_READONLY_TYPES:
            return Cause.TYPE_ENFORCEMENT, ()
    return Cause.UNKNOWN, ()


def _level_of(ctx: SecurityContext | None) -> str | None:
    return None if ctx is None or ctx.range is None else str(ctx.range.low)


def explain_denial(
    d: Denial,
    *,
    oracle: Any | None = None,
    domains: Sequence[LiveDomain] = (),
    inspect_files: bool = True,
) -> Explanation:
    """Explain one denial. ``oracle`` is a :class:`svirt.policy.PolicyOracle` (or None:
    reasoning from the contexts); ``domains`` the running domains (:mod:`owners`)."""
    scon, tcon = _ctx(d.scontext), _ctx(d.tcontext)
    mcs = _mcs(scon, tcon)
    notes: list[str] = []

    # 1. did SELinux cause it?
    caused: bool | None
    if not d.denied:
        mode, caused = "granted", False
        outcome = "SELinux granted this access and logged it (an auditallow rule)."
    elif d.permissive:
        mode, caused = "permissive", False
        outcome = (
            "Not blocked: the domain or the whole system was permissive (permissive=1), so the "
            "access went ahead and was only logged. It will be denied in enforcing mode."
        )
    elif d.permissive is None:
        # Older kernels (and older userspace object managers) wrote no permissive=
        # field: the record does not say whether the access was refused, and nothing
        # here guesses it from the field's absence.
        mode, caused = "unknown", None
        if d.user_space:
            result = "a userspace object manager (D-Bus, systemd, ...) asked SELinux"
        elif d.syscall and d.syscall_success is False:
            result = f"{d.syscall}() failed" + (f" with {d.errno_name}" if d.errno_name else "")
        elif d.syscall and d.syscall_success:
            result = f"{d.syscall}() succeeded"
        else:
            result = "no SYSCALL record shows the result"
        outcome = (
            "Unknown: permissive not recorded (the record has no permissive= field; older "
            "kernels do not write it), so the log does not say whether the access was "
            f"refused or only logged; {result}. Check how that host ran at the time "
            "(getenforce, semanage permissive -l)."
        )
    else:
        mode, caused = "enforcing", True
        if d.user_space:
            outcome = (
                "Yes: a userspace object manager (D-Bus, systemd, ...) refused the request "
                "after asking SELinux."
            )
        elif d.syscall and d.syscall_success is False and d.errno_name:
            text = os.strerror(errno.__dict__.get(d.errno_name, 0)) if d.errno_name else ""
            outcome = (
                f"Yes: the kernel refused the access (permissive=0) and {d.syscall}() failed "
                f"with {d.errno_name} ({text}), the error the program reported."
            )
        elif d.syscall and d.syscall_success:
            outcome = (
                f"SELinux refused the access (permissive=0), but {d.syscall}() still succeeded: "
                "the program fell back to something else."
            )
        else:
            outcome = "Yes: the kernel refused the access (permissive=0)."

    # 2. why: the policy first, the contexts otherwise
    cause = Cause.UNKNOWN
    booleans: tuple[tuple[str, bool], ...] = ()
    constraint: str | None = None
    policy_reason: str | None = None
    basis = "contexts"
    if oracle is not None:
        try:
            decision = oracle.decide(d.scontext, d.tcontext, d.tclass, list(d.perms))
        except PolicyError as exc:
            notes.append(f"the policy could not be asked: {exc}")
            decision = None
        if decision is not None:
            policy_reason = decision.reason.name
            path = getattr(oracle, "policy_path", None) or getattr(oracle, "path", None)
            basis = f"policy {path}" if path else "policy"
            if decision.reason.is_bad_input:
                notes.append(
                    "the loaded policy does not know "
                    + {
                        "BADSCON": f"the process context {d.scontext}",
                        "BADTCON": f"the target context {d.tcontext}",
                        "BADTCLASS": f"the class {d.tclass}",
                        "BADPERM": f"the permission(s) {' '.join(d.perms)} of {d.tclass}",
                    }.get(decision.reason.name, "this access")
                    + " (the log may come from another host or policy); reasoning from the "
                    "contexts"
                )
                basis = "contexts"
            else:
                cause = _policy_cause(decision)
                booleans = tuple(decision.booleans)
                constraint = decision.constraint
    if basis == "contexts":
        cause, booleans = _context_cause(scon, tcon, mcs)

    # 3. which VM
    vm: str | None = None
    vm_source: str | None = None
    vm_domain: LiveDomain | None = None
    if scon is not None:
        owners = owners_of(d.scontext, domains) if scon.range is not None else []
        shared = len(owners) > 1 and all(
            o.seclabel_type == "static" and o.label == owners[0].label for o in owners
        )
        if len(owners) == 1:
            vm_domain = owners[0]
        elif shared:
            # One static label set by several domains (issue 14): the process id tells.
            notes.append(
                "domains "
                + ", ".join(o.name for o in owners)
                + " share this static label by configuration"
            )
        elif len(owners) > 1:
            notes.append(
                "several running domains have the process's categories: "
                + ", ".join(o.name for o in owners)
                + " (categories must be unique per VM)"
            )
            vm_domain = owners[0]
    if vm_domain is None:
        for pid in d.pids:
            vm_domain = domain_of_pid(pid, domains)
            if vm_domain is not None:
                break
    if vm_domain is not None:
        vm = vm_domain.name
        vm_source = f"{vm_domain.origin} live XML {vm_domain.source}"
    else:
        guest = _vm_from_proctitle(d.proctitle)
        if guest is not None:
            vm, vm_source = guest, "QEMU's command line (-name guest=...)"
        else:
            vm, vm_source = _vm_from_title(d.comm, domains)
    target_vms = tuple(o.name for o in (owners_of(d.tcontext, domains) if tcon is not None else []))

    # 4. the file now
    facts: FileFacts | None = None
    path, how = d.path, "the audit record"
    if path is None and d.name and vm_domain is not None:
        for disk in vm_domain.disks:
            if os.path.basename(disk) == d.name:
                path, how = disk, f"a disk of {vm_domain.name} with this file name"
                break
    if path is None and d.name and target_vms:
        for dom in domains:
            if dom.name in target_vms:
                for disk in dom.disks:
                    if os.path.basename(disk) == d.name:
                        path, how = disk, f"a disk of {dom.name} with this file name"
    if path is not None and inspect_files and d.tclass in _FILE_CLASSES:
        facts = _file_facts(path, how, d.ino)
    elif path is not None:
        facts = FileFacts(path=path, how=how, exists=False, error="not inspected")

    why = _why(d, cause, mcs, booleans, constraint, scon, tcon, basis)
    fixes, do_not = _fixes(
        d, cause, mcs, booleans, scon, tcon, vm, vm_domain, target_vms, facts, domains
    )
    if (
        cause is Cause.TYPE_ENFORCEMENT
        and scon is not None
        and scon.type in VIRT_DOMAIN_TYPES
        and tcon is not None
        and tcon.type in IMAGE_STORE_TYPES
    ):
        notes.append(
            f"setroubleshoot's qemu_file_image advice (semanage fcontext -t {tcon.type}) does "
            f"not help here: {tcon.type} is the image store's label, which no running VM may "
            "use; the image needs svirt_image_t with the VM's categories"
        )
    if facts is not None and facts.exists and facts.label and facts.label != d.tcontext:
        notes.append(
            f"the file is labelled {facts.label} now (the denial saw {d.tcontext}): it was "
            "relabelled since"
        )
    if facts is not None and facts.inode_matches is False:
        notes.append(
            f"{facts.path} has inode {facts.inode}, the denial's object had ino={d.ino}: it may "
            "be another file with the same name, or the file was replaced"
        )
    return Explanation(
        denial=d,
        selinux_caused=caused,
        mode=mode,
        outcome=outcome,
        cause=cause,
        why=why,
        basis=basis,
        policy_reason=policy_reason,
        booleans=booleans,
        constraint=constraint,
        mcs=mcs,
        vm=vm,
        vm_source=vm_source,
        vm_domain=vm_domain,
        target_vms=target_vms,
        file=facts,
        fixes=tuple(fixes),
        do_not=do_not,
        notes=tuple(notes),
    )


def _perm_text(d: Denial) -> str:
    return " ".join(d.perms) if d.perms else "access"


def _why(
    d: Denial,
    cause: Cause,
    mcs: McsFacts | None,
    booleans: tuple[tuple[str, bool], ...],
    constraint: str | None,
    scon: SecurityContext | None,
    tcon: SecurityContext | None,
    basis: str,
) -> str:
    stype = scon.type if scon else d.scontext
    ttype = tcon.type if tcon else d.tcontext
    perms = _perm_text(d)
    hedge = "" if basis != "contexts" else " (from the contexts; no policy confirmed it)"
    if cause is Cause.TYPE_ENFORCEMENT:
        text = (
            f"type enforcement: no allow rule lets {stype} {perms} a {d.tclass} of type "
            f"{ttype}, so {ttype} is not accessible to {stype}"
        )
        if stype in VIRT_DOMAIN_TYPES:
            text += (
                f"; a VM may use images labelled svirt_image_t with its own categories (and "
                f"read virt_content_t), not {ttype}"
            )
        return text + hedge
    if cause is Cause.MCS:
        if mcs is None:
            return f"an MCS constraint forbids it{hedge}"
        missing = f" it lacks {mcs.missing}" if mcs.missing else ""
        return (
            f"MCS: the process runs at {mcs.source_level} and the target is at "
            f"{mcs.target_level}; the process level does not dominate the target's,{missing} "
            f"(types allow it; the categories do not){hedge}"
        )
    if cause is Cause.BOOLEAN:
        names = " or ".join(f"{n}={'on' if v else 'off'}" for n, v in booleans) or "a boolean"
        return f"a boolean: {stype} may {perms} {ttype} only with {names}{hedge}"
    if cause is Cause.CONSTRAINT:
        return f"a constraint forbids it: {constraint}" if constraint else "a constraint forbids it"
    if cause is Cause.DONTAUDIT:
        return (
            f"no allow rule, and a dontaudit rule normally hides this denial ({stype} -> "
            f"{ttype}); you see it because dontaudit rules are disabled (semodule -DB)"
        )
    if cause is Cause.RBAC:
        return f"RBAC: the role in {d.scontext} may not be associated with this type"
    if cause is Cause.BOUNDS:
        return f"bounds: {stype} exceeds what its bounding type allows"
    if cause is Cause.ALLOWED_NOW:
        return (
            "the loaded policy allows this access now: the policy or a boolean changed after "
            "the denial was logged (or it was logged on another host)"
        )
    return "the contexts do not say; load the host's policy to find out" + hedge


def _fixes(
    d: Denial,
    cause: Cause,
    mcs: McsFacts | None,
    booleans: tuple[tuple[str, bool], ...],
    scon: SecurityContext | None,
    tcon: SecurityContext | None,
    vm: str | None,
    vm_domain: LiveDomain | None,
    target_vms: tuple[str, ...],
    facts: FileFacts | None,
    domains: Sequence[LiveDomain],
) -> tuple[list[Fix], str | None]:
    fixes: list[Fix] = []
    is_vm = scon is not None and scon.type in VIRT_DOMAIN_TYPES
    target = facts.path if facts is not None else (d.path or d.name or "FILE")
    level = _level_of(scon) or "s0:cX,cY"
    ttype = tcon.type if tcon else "?"
    vm_text = f"VM {vm}" if vm else "the VM"
    do_not: str | None = None

    if cause is Cause.MCS:
        drifted = False
        if target_vms:
            others = ", ".join(target_vms)
            fixes.append(
                Fix(
                    f"{target} is labelled for {others} (running). Two VMs must not share a "
                    f"writable disk: give {vm_text} its own copy, or, if the disk is meant to be "
                    "shared, mark it <shareable/> in both domains (it is then labelled "
                    "svirt_image_t:s0, without categories)",
                    "<disk ...><shareable/></disk>",
                )
            )
        elif (
            vm_domain is not None
            and vm_domain.imagelabel
            and vm_domain.relabel is not False
            and _is_disk_of(target, vm_domain)
        ):
            # A running VM's own disk relabelled by hand (the Fedora page's chcon -l s0:c1):
            # the VM's own label again, the one rule svirt.advice keeps for every command.
            drifted = True
            fixes.extend(
                own_label_fixes(
                    vm_domain.name,
                    target,
                    vm_domain.imagelabel,
                    facts.label if facts is not None and facts.label else d.tcontext,
                )
            )
        else:
            fixes.append(
                Fix(
                    f"{target} carries categories from an earlier or other label "
                    f"({mcs.target_level if mcs else ttype}) "
                    f"that no running VM owns: let svirt/libvirt relabel it for {vm_text} at start "
                    "(relabel='yes', the default for dynamic labels); `svirt doctor` lists such "
                    "stale labels",
                    "<seclabel type='dynamic' model='selinux' relabel='yes'/>",
                )
            )
            fixes.append(
                Fix(
                    f"or, if {vm_text} uses a static label with relabel='no', give the file the "
                    "VM's categories by hand",
                    f"chcon -l {level} {target}",
                )
            )
        if not drifted:
            fixes.append(
                Fix(
                    "for media several VMs only read (ISOs, base images), use <readonly/> and "
                    "<shareable/>: no categories are needed",
                )
            )
        do_not = (
            "Do not use audit2allow: this is an MCS constraint violation (audit2why says "
            "'constraint violation'). An allow rule cannot override a constraint, so the module "
            "audit2allow writes changes nothing; the only policy change that would let it "
            "through is dropping the MCS constraint for "
            f"{scon.type if scon else 'the VM type'}, which removes the isolation between all "
            "VMs. Fix the label instead."
        )
        if drifted:
            do_not += " " + DRIFT_DO_NOT
    elif cause is Cause.TYPE_ENFORCEMENT and is_vm:
        assert scon is not None
        xml_hint = ""
        if vm_domain is not None and vm_domain.relabel is False:
            xml_hint = (
                f" ({vm_domain.name}'s <seclabel type='{vm_domain.seclabel_type}'> has "
                "relabel='no', so nothing labelled its images)"
            )
        sl_type = vm_domain.seclabel_type if vm_domain and vm_domain.seclabel_type else "static"
        if sl_type == "dynamic":
            # Dynamic labels always relabel: an unlabelled image means this disk opted out.
            xml_hint = (
                " (the domain's label is dynamic, so look for relabel='no' in this disk's own "
                "<seclabel>, or a disk added behind svirt's and libvirt's back)"
            )
            seclabel = "<seclabel type='dynamic' model='selinux' relabel='yes'/>"
        else:
            seclabel = (
                f"<seclabel type='{sl_type}' model='selinux' relabel='yes'>"
                f"<label>{d.scontext}</label></seclabel>"
            )
        if ttype in IMAGE_STORE_TYPES:
            fixes.append(
                Fix(
                    f"label the image for {vm_text}, not a policy module: let svirt/libvirt "
                    f"relabel it at start{xml_hint}. With relabel='yes' the image gets "
                    f"svirt_image_t:{level} while the VM runs and its label is restored at stop",
                    seclabel,
                )
            )
            fixes.append(
                Fix(
                    "or keep relabel='no' and label the file yourself, for this VM only",
                    f"chcon -t svirt_image_t -l {level} {target}",
                )
            )
            fixes.append(
                Fix(
                    "or relabel just this disk: a per-disk <seclabel> inside its <source>",
                    f"<source file='{target}'><seclabel model='selinux' relabel='yes'/></source>",
                )
            )
        else:
            directory = os.path.dirname(target) if target.startswith("/") else "DIR"
            fixes.append(
                Fix(
                    f"{target} has type {ttype}, which no VM may use: move the image under "
                    "/var/lib/libvirt/images, or make its directory an image store so it gets "
                    "virt_image_t, then let svirt/libvirt relabel it at start (relabel='yes')",
                    f"semanage fcontext -a -t virt_image_t '{directory}(/.*)?' && "
                    f"restorecon -Rv {directory}",
                )
            )
            fixes.append(
                Fix(
                    f"or, with relabel='no', label it for {vm_text} by hand",
                    f"chcon -t svirt_image_t -l {level} {target}",
                )
            )
        do_not = (
            "Do not use audit2allow: the rule it writes (allow "
            f"{scon.type} {ttype}:{d.tclass} {{ {_perm_text(d)} }};) applies to every VM on "
            f"the host, since all of them run as {scon.type}, so any guest could then use "
            f"every {ttype} file. Fix the file's label instead."
        )
    elif cause is Cause.BOOLEAN:
        fixes.extend(boolean_fixes(booleans))
        if ttype in FS_BOOLEANS and is_vm:
            fixes.append(
                Fix(
                    f"{ttype} files carry no per-file labels, so categories cannot keep VMs apart "
                    f"on that filesystem: with {FS_BOOLEANS[ttype]} on, every VM can reach every "
                    "image there; give each VM its own export, or use a labelled filesystem"
                )
            )
        do_not = "Do not use audit2allow: the boolean is the policy's own switch for this access."
    elif cause is Cause.TYPE_ENFORCEMENT:
        fixes.append(
            Fix(
                f"check that {target} has the label its location calls for; restore the default",
                f"restorecon -v {target}",
            )
        )
        fixes.append(
            Fix(
                "if the file belongs elsewhere, give its directory the right type",
                f"semanage fcontext -a -t TYPE '{os.path.dirname(target) or 'DIR'}(/.*)?' && "
                f"restorecon -Rv {os.path.dirname(target) or 'DIR'}",
            )
        )
        fixes.append(
            Fix(
                "a local policy module (audit2allow) only if this access is intended, after "
                "reading the rules it generates"
            )
        )
    elif cause is Cause.DONTAUDIT:
        fixes.append(Fix("usually harmless; re-enable dontaudit rules", "semodule -B"))
    elif cause is Cause.ALLOWED_NOW:
        fixes.append(Fix("nothing to do unless it recurs with the current policy"))
    elif cause is Cause.CONSTRAINT:
        fixes.append(
            Fix(
                "fix the contexts (user or role) the constraint compares; constraints cannot be "
                "overridden by allow rules"
            )
        )
        do_not = "Do not use audit2allow: allow rules cannot override a constraint."
    if not d.denied or d.permissive:
        fixes.insert(0, Fix("nothing failed yet; fix it before the domain or host goes enforcing"))
    return fixes, do_not


def _is_disk_of(path: str, domain: LiveDomain) -> bool:
    real = os.path.realpath(path)
    return any(path == disk or real == os.path.realpath(disk) for disk in domain.disks)


def explain(
    events: Iterable[Event],
    *,
    oracle: Any | None = None,
    domains: Sequence[LiveDomain] = (),
    inspect_files: bool = True,
) -> list[Explanation]:
    """Explain every distinct denial in the events."""
    return [
        explain_denial(d, oracle=oracle, domains=domains, inspect_files=inspect_files)
        for d in collect_denials(events)
    ]
