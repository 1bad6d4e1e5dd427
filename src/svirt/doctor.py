"""``svirt doctor`` and ``svirt recover``: stale sVirt state, found from live facts and
repaired without losing anything.

libvirt decides that remembered labels are stale only from the boot time in their
timestamp, so a daemon that crashed without a reboot, or an interrupted detach, leaves
``trusted.libvirt.security.*`` behind and the next start fails with "Setting different
SELinux label on … which is already in use" (users-and-peers §1.1, seed 000). The doctor
asks the host instead. For every file it looks at, the *users* are

- the domains that list it: svirt's records (every state: a ``svirt label``\\ed domain
  uses its files without any process) and libvirt's live XML whose QEMU runs, on the
  host path and, for ``/dev`` nodes, on the copy in the domain's private ``/dev``;
- every other process holding it open (``/proc/*/fd``, compared by device and inode).

and it reports:

- remembered xattrs (libvirt's ``selinux``/``dac`` and svirt's ACL references
  ``trusted.svirt.security.acl_<uid>``) whose timestamp is not this boot;
- a reference count that differs from the number of users;
- an MCS label whose categories no running or labelled domain can reach (svirt's ledger
  and records, libvirt's live XML);
- a dynamic category pair equal to (or dominated by) a static label's, and two running
  domains with the same pair;
- a copy inside a VM's private ``/dev`` (``/proc/PID/root/dev/…``) that still carries
  remembered xattrs although the VM does not use it (seed 000's failed re-attach);
- an svirt record whose monitor and QEMU are both gone;
- a running or labelled domain's file that no longer carries the label the domain gave
  it (relabelled by hand: the Fedora page's ``chcon -l s0:c1``), with the fix that keeps
  isolation (:mod:`svirt.advice`: the VM's own label, never ``restorecon``);
- an svirt record with no VM (labelled, or its restore failed): ``svirt restore NAME``;
  an orphan one when every file it names is gone, which recover forgets.

Each finding says what it saw and the exact command that fixes it. :func:`recover`
first rolls back interrupted transactions and reconciles dead monitors, then repairs
per file and per xattr family: with no user, the remembered original label, owner or
ACL entry is put back and only then are the xattrs removed; with users, only the count
(and a stale timestamp) is corrected. Every change happens under libvirt's metadata
lock on the inode that was examined, after checking that its xattrs did not change
since the scan. Labels with no remembered original are reported, never guessed.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shlex
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from svirt.advice import DRIFT_DO_NOT, own_label_fixes, recover_command
from svirt.conf import Config
from svirt.context import MLSRange, SecurityContext, format_categories
from svirt.domain.model import Domain, SeclabelType
from svirt.domain.resources import ResourceKind, domain_resources
from svirt.errors import ContextError, SecurityError, StateError, SvirtError
from svirt.host import devices as host_devices
from svirt.host import selinux as host_selinux
from svirt.host.namespace import mount_namespace_id
from svirt.host.remembered import ACL_XATTR_PREFIX, Remembered, has_remembered, read_all
from svirt.launch.lifecycle import RECONCILED, qemu_alive, reconcile
from svirt.policy.verify import Skipped, crashed_libvirt_domain, load_live_domain
from svirt.security.dac import DACDriver, parse_ids
from svirt.security.driver import Action, LabelOp, Outcome, SecurityDriver
from svirt.security.manager import SecurityManager
from svirt.security.remember import boot_time, erased_warning, xattr_names
from svirt.security.selinux import SELinuxDriver
from svirt.security.transaction import Transaction
from svirt.state.db import readonly_uri
from svirt.state.domains import DomainRecord, DomainState, DomainStore
from svirt.state.journal import Journal
from svirt.state.originals import KeptOriginals

__all__ = [
    "DoctorReport",
    "DomainUse",
    "FileFacts",
    "Finding",
    "Holder",
    "Kind",
    "RecoverAction",
    "RecoverReport",
    "Remembered",
    "examine",
    "recover",
    "repair_file",
]

log = logging.getLogger(__name__)

_PROC_ROOT = re.compile(r"^/proc/(\d+)/root(/.*)$")
_MAX_DEV_ENTRIES = 10_000  # a VM's private /dev is a 64 KiB tmpfs; refuse to walk a huge one


class Kind(enum.Enum):
    STALE_TIMESTAMP = "stale-timestamp"
    REFCOUNT = "refcount"
    ORPHAN_LABEL = "orphan-label"
    CATEGORY_CLASH = "category-clash"
    NAMESPACE_COPY = "namespace-copy"
    DEAD_DOMAIN = "dead-domain"
    LIBVIRT_PENDING = "libvirt-pending"  # libvirtd will restore it when it restarts
    ERASED = "erased"  # someone else removed what svirt remembered (libvirt's defect)
    # issue 14 (restore): records and labels that need a human or recover
    DRIFTED_LABEL = "drifted-label"  # a VM's file no longer carries the label it gave it
    LABELLED = "labelled"  # an svirt record with no VM: its files keep its labels
    ORPHAN_RECORD = "orphan-record"  # an svirt record whose files are all gone


class RepairKind(enum.Enum):
    RESTORE = "restore"  # put the remembered original back, then remove the xattrs
    REFCOUNT = "refcount"  # set the count to the users (and the timestamp to this boot)
    RECONCILE = "reconcile"  # a dead monitor: svirt restores the domain's labels
    RELABEL = "relabel"  # put the VM's own label back on its file (issue 14)
    FORGET = "forget"  # release an orphan record's MCS pair and identity, drop it


@dataclass(frozen=True, slots=True)
class Holder:
    """A process with the file open."""

    pid: int
    comm: str
    uid: int
    qemu: bool


@dataclass(frozen=True, slots=True)
class DomainUse:
    """A domain that lists the file among its resources."""

    name: str
    origin: str  # svirt | libvirt
    state: str
    pid: int | None  # its QEMU, when running
    uid: int | None  # the QEMU uid from its DAC label, when known
    # the drivers whose labelling of this file remembers the original (and so holds a
    # reference): libvirt's rule, from the drivers' own plans; None: not per file
    remembers: frozenset[str] | None = None
    pending: bool = False  # a libvirt domain whose QEMU died: libvirtd will restore


@dataclass(frozen=True, slots=True)
class FileFacts:
    path: str
    dev: int
    ino: int
    mode: int
    label: str | None
    uid: int
    gid: int
    remembered: tuple[Remembered, ...]
    holders: tuple[Holder, ...]
    domains: tuple[DomainUse, ...]
    namespace_pid: int | None  # the VM whose private /dev holds this node

    def _counts(self, d: DomainUse, family: str | None, uid: int | None) -> bool:
        if uid is not None and d.uid is not None and d.uid != uid:
            return False
        if family in ("selinux", "dac") and d.remembers is not None:
            # libvirt counts a domain for a driver only where that driver's labelling
            # remembers: not a DAC-only domain for selinux, not read-only or shareable
            # media, not a domain without that seclabel.
            return family in d.remembers
        return True

    def users(
        self, uid: int | None = None, family: str | None = None, *, take_pending: bool = False
    ) -> int:
        """Domains using the file for ``family`` plus other processes holding it
        (``uid``: only those running as that user, for an ACL reference).
        ``take_pending``: libvirt domains whose QEMU died no longer count."""
        keys: set[tuple[str, str]] = set()
        dom_pids = {d.pid for d in self.domains if d.pid is not None}
        for d in self.domains:
            if take_pending and d.pending:
                continue
            if self._counts(d, family, uid):
                keys.add((d.origin, d.name))
        for h in self.holders:
            if (uid is None or h.uid == uid) and h.pid not in dom_pids:
                keys.add(("pid", str(h.pid)))
        return len(keys)

    def describe_users(self, uid: int | None = None, family: str | None = None) -> str:
        parts = [
            f"{d.origin} domain {d.name} ({d.state})"
            for d in self.domains
            if self._counts(d, family, uid)
        ]
        dom_pids = {d.pid for d in self.domains if d.pid is not None}
        parts += [
            f"pid {h.pid} ({h.comm})"
            for h in self.holders
            if (uid is None or h.uid == uid) and h.pid not in dom_pids
        ]
        if not parts:
            return "no process holds it and no domain lists it"
        return "used by " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: what was seen, and the exact command that fixes it."""

    kind: Kind
    path: str | None  # None for a domain-level finding
    evidence: str
    fix: str
    manual: str | None = None  # the same fix by hand, where there is one
    family: str | None = None
    repair: RepairKind | None = None  # what ``svirt recover --apply`` does; None: nothing
    domains: tuple[str, ...] = ()  # the domains a domain-level finding is about
    label: str | None = None  # a drifted label: the VM's label recover puts back

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "path": self.path,
            "family": self.family,
            "evidence": self.evidence,
            "fix": self.fix,
            "manual": self.manual,
            "repair": self.repair.value if self.repair else None,
            "domains": list(self.domains),
            "label": self.label,
        }


@dataclass(frozen=True, slots=True)
class DoctorReport:
    boot_time: int
    files: tuple[FileFacts, ...]
    findings: tuple[Finding, ...]
    domains: tuple[DomainUse, ...]
    processes: int
    skipped: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "boot_time": self.boot_time,
            "checked": len(self.files),
            "processes": self.processes,
            "findings": [f.to_dict() for f in self.findings],
            "files": [_facts_dict(f) for f in self.files],
            "domains": [_use_dict(d) for d in self.domains],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def _use_dict(d: DomainUse) -> dict[str, Any]:
    return {"name": d.name, "origin": d.origin, "state": d.state, "pid": d.pid, "uid": d.uid}


def _facts_dict(f: FileFacts) -> dict[str, Any]:
    return {
        "path": f.path,
        "dev": f.dev,
        "ino": f.ino,
        "label": f.label,
        "owner": f"{f.uid}:{f.gid}",
        "namespace_pid": f.namespace_pid,
        "remembered": [
            {
                "family": r.family,
                "original": r.original,
                "refcount": r.raw_refcount,
                "timestamp": r.timestamp,
                "this_boot": r.this_boot,
            }
            for r in f.remembered
        ],
        "holders": [{"pid": h.pid, "comm": h.comm, "uid": h.uid} for h in f.holders],
        "domains": [_use_dict(d) for d in f.domains],
        "users": f.users(),
    }


# --- the live facts ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Proc:
    pid: int
    comm: str
    uid: int
    qemu: bool


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _processes() -> dict[int, _Proc]:
    me = os.getpid()
    out: dict[int, _Proc] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        status = _read_text(f"/proc/{pid}/status")
        if status is None:
            continue
        uid = 0
        for line in status.splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
        comm = (_read_text(f"/proc/{pid}/comm") or "").strip()
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            exe = ""
        qemu = exe.startswith("qemu-") or comm.startswith(("qemu-", "qemu:"))
        out[pid] = _Proc(pid, comm, uid, qemu)
    return out


def _holders(
    procs: dict[int, _Proc], wanted: set[tuple[int, int]]
) -> dict[tuple[int, int], list[Holder]]:
    """Processes with an open descriptor on each wanted (device, inode)."""
    found: dict[tuple[int, int], list[Holder]] = {}
    if not wanted:
        return found
    for pid, proc in procs.items():
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        seen: set[tuple[int, int]] = set()
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in wanted and key not in seen:
                seen.add(key)
                found.setdefault(key, []).append(Holder(pid, proc.comm, proc.uid, proc.qemu))
    return found


@dataclass(frozen=True, slots=True)
class _Dom:
    name: str
    origin: str
    state: str
    pid: int | None  # a QEMU that runs
    uid: int | None
    domain: Domain
    source: Path
    dead: bool = False  # an svirt record whose monitor and QEMU are gone
    owner: int | None = None
    pending: bool = False  # libvirt's status XML is there, its QEMU is gone
    # path -> the drivers whose labelling of it remembers (None: not known)
    remembers: dict[str, frozenset[str]] | None = None
    # path -> the SELinux label the domain's labelling gave it (files it relabelled for
    # itself and remembers the original of: the ones a drift is a problem for)
    labels: dict[str, str] | None = None
    pending_paths: tuple[str, ...] = ()  # restore-failed: the driver:path pairs left

    def use(self, path: str | None = None) -> DomainUse:
        fams = None
        if path is not None and self.remembers is not None:
            fams = self.remembers.get(path, frozenset())
        return DomainUse(self.name, self.origin, self.state, self.pid, self.uid, fams, self.pending)


def _planners(cfg: Config) -> list[SecurityDriver]:
    """The drivers whose plans say which files a domain's labelling remembers (the one
    place of libvirt's rule: top of a chain, not read-only, not shareable, ...)."""
    out: list[SecurityDriver] = []
    for make in (SELinuxDriver, DACDriver):
        try:
            out.append(make(cfg))
        except (SvirtError, OSError) as exc:
            log.debug("doctor: no %s plans: %s", make.__name__, exc)
            return []
    return out


def _remembering(
    planners: Sequence[SecurityDriver], domain: Domain
) -> dict[str, frozenset[str]] | None:
    plan = _plans(planners, domain)
    return None if plan is None else plan[0]


def _plans(
    planners: Sequence[SecurityDriver], domain: Domain
) -> tuple[dict[str, frozenset[str]], dict[str, str]] | None:
    """From the drivers' own plans: the drivers remembering each file, and the SELinux
    label the domain gives each file it remembers the original of."""
    if not planners:
        return None
    found: dict[str, set[str]] = {}
    labels: dict[str, str] = {}
    resources = list(domain_resources(domain))
    for drv in planners:
        try:
            ops = drv.set_ops(domain, resources)
        except (SvirtError, OSError) as exc:
            log.debug("doctor: %s: cannot plan %s: %s", domain.name, drv.name, exc)
            return None
        for op in ops:
            if op.remember:
                found.setdefault(op.path, set()).add(op.driver)
                if op.driver == "selinux" and op.value is not None:
                    labels[op.path] = op.value
    return {p: frozenset(f) for p, f in found.items()}, labels


def _records(cfg: Config) -> list[DomainRecord]:
    """svirt's records from the state database, read-only, with the start times of
    their QEMU and owner (a pid reused by another process is not theirs); the XML views
    (which carry no start times) only when there is no database."""
    db = cfg.state_dir / "svirt.db"
    if db.exists():
        try:
            conn = sqlite3.connect(readonly_uri(db), uri=True, timeout=5.0)
            try:
                return list(DomainStore(cfg.state_dir, conn).records())
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.debug("doctor: cannot read the records in %s: %s; reading the views", db, exc)
    return list(DomainStore(cfg.state_dir).records())


def _dac_uid(domain: Domain) -> int | None:
    sl = domain.seclabel("dac")
    if sl is None or not sl.label:
        return None
    try:
        return parse_ids(sl.label)[0]
    except SecurityError:
        return None


def _domains(cfg: Config, skipped: list[tuple[str, str]]) -> list[_Dom]:
    planners = _planners(cfg)
    out: list[_Dom] = []
    try:
        records = _records(cfg)
    except StateError as exc:
        skipped.append((exc.source or str(cfg.state_dir), exc.message))
        records = []
    for rec in records:
        alive = qemu_alive(rec)
        dead = rec.state.active and not alive and not rec.owner_alive()
        plan = _plans(planners, rec.domain)
        out.append(
            _Dom(
                rec.domain.name,
                "svirt",
                rec.state,
                rec.pid if alive else None,
                _dac_uid(rec.domain),
                rec.domain,
                rec.path,
                dead,
                rec.owner,
                remembers=plan[0] if plan is not None else None,
                # what a labelled or running domain gave its files (not one stopping or
                # half restored: those files are on their way back to their originals)
                labels=plan[1]
                if plan is not None
                and (
                    rec.state is DomainState.LABELLED
                    or (rec.state is DomainState.RUNNING and alive)
                )
                else None,
                pending_paths=rec.pending,
            )
        )
    try:
        paths = sorted(p for p in cfg.libvirt_run_dir.iterdir() if p.suffix == ".xml")
    except OSError:
        paths = []
    for path in paths:
        live = load_live_domain(path, "libvirt")
        pending = None
        if isinstance(live, Skipped):
            # A status XML whose QEMU is gone (libvirtd and QEMU killed): libvirtd
            # restores its files when it restarts and reconnects.
            pending = crashed_libvirt_domain(path)
            if pending is None:
                log.debug("doctor: %s: %s", live.path, live.reason)
                continue
            out.append(
                _Dom(
                    pending.name,
                    "libvirt",
                    "crashed, status XML kept",
                    None,
                    _dac_uid(pending),
                    pending,
                    path,
                    pending=True,
                    remembers=_remembering(planners, pending),
                )
            )
            continue
        plan = _plans(planners, live.domain)
        out.append(
            _Dom(
                live.name,
                "libvirt",
                live.state or "running",
                live.pid,
                _dac_uid(live.domain),
                live.domain,
                path,
                remembers=plan[0] if plan is not None else None,
                labels=plan[1] if plan is not None else None,
            )
        )
    return out


def _resource_paths(domain: Domain) -> list[str]:
    paths: list[str] = []
    for res in domain_resources(domain):
        if not res.local:
            continue
        if res.kind is ResourceKind.HOSTDEV and res.hostdev is not None:
            try:
                paths.extend(host_devices.hostdev_paths(res.hostdev))
            except (OSError, SvirtError):
                continue
        elif res.path:
            paths.append(res.path)
            if res.kind is ResourceKind.CHARDEV and res.chardev_type == "pipe":
                paths += [res.path + ".in", res.path + ".out"]
    return list(dict.fromkeys(paths))


def _other_namespace(pid: int) -> bool:
    try:
        return mount_namespace_id(pid) != mount_namespace_id()
    except OSError:
        return False


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _domain_keys(doms: Sequence[_Dom]) -> dict[tuple[int, int], list[DomainUse]]:
    """Which domains list each (device, inode): host paths, and for a running VM with
    its own mount namespace, its private copies of /dev nodes."""
    index: dict[tuple[int, int], list[DomainUse]] = {}
    for d in doms:
        private = d.pid is not None and _other_namespace(d.pid)
        for path in _resource_paths(d.domain):
            views = [path]
            if private and path.startswith("/dev/"):
                views.append(f"/proc/{d.pid}/root{path}")
            for view in views:
                key = _stat_key(view)
                if key is None:
                    continue
                users = index.setdefault(key, [])
                if all((u.origin, u.name) != (d.origin, d.name) for u in users):
                    users.append(d.use(path))
    return index


def _dir_users(directory: str, doms: Sequence[_Dom]) -> list[_Dom]:
    """Domains with a resource under a directory (the search permission an ACL-mode
    reference on it grants is theirs)."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    return [
        d
        for d in doms
        if any(os.path.realpath(p).startswith(prefix) for p in _resource_paths(d.domain))
    ]


def _ledger_levels(cfg: Config) -> list[tuple[str, str]]:
    """(level, domain) of svirt's MCS reservations, read without writing anything."""
    db = cfg.state_dir / "svirt.db"
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(readonly_uri(db), uri=True, timeout=5.0)
        try:
            rows = conn.execute(
                "SELECT level, domain FROM mcs_reservations WHERE kind != 'blocked'"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.debug("doctor: cannot read the MCS ledger %s: %s", db, exc)
        return []
    return [(str(level), str(dom)) for level, dom in rows]


def _erased_findings(
    cfg: Config, doms: Sequence[_Dom], files: Sequence[FileFacts], whole_host: bool
) -> list[Finding]:
    """svirt's own copies of originals whose xattrs someone else removed while its
    domain uses the file (libvirt's failed start or stop on a shared file)."""
    db = cfg.state_dir / "svirt.db"
    if not db.exists():
        return []
    active = {d.name for d in doms if d.origin == "svirt" and not d.dead}
    try:
        conn = sqlite3.connect(readonly_uri(db), uri=True, timeout=5.0)
        try:
            erased = KeptOriginals(conn).erased()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.debug("doctor: cannot read svirt's kept originals in %s: %s", db, exc)
        return []
    if not erased:
        return []
    paths = set() if whole_host else {os.path.realpath(f.path) for f in files}
    return [
        Finding(
            Kind.ERASED,
            k.path,
            erased_warning(k.path, k.driver, k.domain, k.value),
            f"svirt stop {_q(k.domain)} (stop puts the original back from svirt's copy)",
            family=k.driver,
            domains=(k.domain,),
        )
        for k in erased
        if k.domain in active and (whole_host or os.path.realpath(k.path) in paths)
    ]


def _categories(text: str) -> frozenset[int] | None:
    """The (high) categories of a context or a level/range; None when unparsable."""
    try:
        ctx = SecurityContext.parse(text)
        rng = ctx.range
    except ContextError:
        try:
            rng = MLSRange.parse(text)
        except ContextError:
            return None
    return None if rng is None else rng.high.categories


# --- what is on a file ---------------------------------------------------------------


def _remembered(path: str) -> list[Remembered]:
    return read_all(path)


# --- which files ---------------------------------------------------------------------


@dataclass(slots=True)
class _Target:
    path: str
    namespace_pid: int | None = None


def _namespace_nodes(pid: int) -> Iterator[str]:
    """Nodes under a VM's private /dev that carry remembered xattrs (not following
    symlinks: an absolute link there would resolve in our namespace)."""
    root = f"/proc/{pid}/root/dev"
    try:
        root_dev = os.lstat(root).st_dev
    except OSError:
        return
    stack, seen = [root], 0
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > _MAX_DEV_ENTRIES:
                log.warning("doctor: %s has over %d entries; not walked further", root, seen)
                return
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) or st.st_dev != root_dev:
                continue  # links, and other mounts (pts, shm, ...) shared with the host
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif has_remembered(entry.path):
                yield entry.path


def _vm_namespaces(procs: dict[int, _Proc], doms: Sequence[_Dom]) -> list[int]:
    """One pid per private mount namespace of a QEMU (a running domain's or any other)."""
    candidates = [d.pid for d in doms if d.pid is not None]
    candidates += [p.pid for p in procs.values() if p.qemu]
    seen: set[str] = set()
    try:
        ours = mount_namespace_id()
    except OSError:
        return []
    out: list[int] = []
    for pid in dict.fromkeys(candidates):
        try:
            ns = mount_namespace_id(pid)
        except OSError:
            continue
        if ns != ours and ns not in seen:
            seen.add(ns)
            out.append(pid)
    return out


def _dir_entries(path: str) -> list[str]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for e in entries:
        try:
            st = e.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
            out.append(e.path)
    return out


def _add_path(out: list[_Target], path: str, ns_pids: Sequence[int]) -> None:
    m = _PROC_ROOT.match(path)
    if m is not None:
        out.append(_Target(path, int(m.group(1))))
        return
    out.append(_Target(path))
    if os.path.isdir(path):
        out.extend(_Target(p) for p in _dir_entries(path))
    elif path.startswith("/dev/"):
        # The copies QEMUs see in their private /dev (seed 000): only those carry the
        # xattrs libvirt wrote in the VM's namespace.
        for pid in ns_pids:
            view = f"/proc/{pid}/root{path}"
            if os.path.lexists(view) and not os.path.islink(view):
                out.append(_Target(view, pid))


def _is_path(arg: str) -> bool:
    return "/" in arg or os.path.lexists(arg)


def _targets(
    cfg: Config, args: Sequence[str], doms: Sequence[_Dom], ns_pids: Sequence[int]
) -> list[_Target]:
    out: list[_Target] = []
    if not args:
        for d in doms:
            out.extend(_Target(p) for p in _resource_paths(d.domain))
        for directory in cfg.images_dirs:
            if os.path.isdir(directory):
                _add_path(out, directory, ())
        for pid in ns_pids:
            out.extend(_Target(p, pid) for p in _namespace_nodes(pid))
        return out
    for arg in args:
        if _is_path(arg):
            _add_path(out, os.path.abspath(arg) if not arg.startswith("/") else arg, ns_pids)
            continue
        named = [d for d in doms if d.name == arg]
        if not named:
            raise SvirtError(f"no domain or file named '{arg}'")
        for d in named:
            out.extend(_Target(p) for p in _resource_paths(d.domain))
            if d.pid is not None and d.pid in ns_pids:
                out.extend(_Target(p, d.pid) for p in _namespace_nodes(d.pid))
    return out


# --- findings ------------------------------------------------------------------------


def _q(text: str) -> str:
    return shlex.quote(text)


def _recover_command(cfg: Config, path: str | None, *, take: bool = False) -> str:
    return recover_command(path, config=cfg.source, take=take)


def _restore_command(cfg: Config, name: str) -> str:
    conf = f" --config {_q(cfg.source)}" if not cfg.source.startswith("<") else ""
    return f"svirt restore{conf} {_q(name)}"


def _perm_text(perm: int | None) -> str:
    if perm is None:
        return "---"
    return "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))


def _manual_restore(path: str, r: Remembered) -> str | None:
    steps: list[str] = []
    if r.family == "selinux" and r.original:
        steps.append(f"chcon {_q(r.original)} {_q(path)}")
    elif r.family == "dac" and r.original:
        ids = _owner_ids(r.original)
        if ids is None:
            return None
        steps.append(f"chown {ids[0]}:{ids[1]} {_q(path)}")
    elif r.uid is not None and r.original:
        prev, mask = (None if p == "-" else int(p) for p in r.original.split())
        steps.append(
            f"setfacl -x u:{r.uid} {_q(path)}"
            if prev is None
            else f"setfacl -m u:{r.uid}:{_perm_text(prev)} {_q(path)}"
        )
        if mask is not None:
            steps.append(f"setfacl -m m::{_perm_text(mask)} {_q(path)}")
    steps += [f"setfattr -x {n} {_q(path)}" for n in r.names]
    return " && ".join(steps)


def _manual_refcount(path: str, r: Remembered, users: int) -> str:
    if r.uid is not None:
        value = f"{users} {r.original or '- -'} {boot_time()}"
        return f"setfattr -n {ACL_XATTR_PREFIX}{r.uid} -v {_q(value)} {_q(path)}"
    _, ref_name, ts_name = xattr_names(r.family)
    steps = [f"setfattr -n {ref_name} -v {users} {_q(path)}"]
    if not r.this_boot:
        steps.append(f"setfattr -n {ts_name} -v {boot_time()} {_q(path)}")
    return " && ".join(steps)


def _owner_ids(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"\+(\d+):\+(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _what(r: Remembered) -> str:
    if r.family == "selinux":
        return f"label {r.original}" if r.original else "no label"
    if r.family == "dac":
        return f"owner {r.original}" if r.original else "no owner"
    prev = r.original.split()[0] if r.original else "?"
    entry = "no entry" if prev == "-" else f"entry u:{r.uid}:{_perm_text(int(prev))}"
    return f"ACL reference of uid {r.uid} (replaced {entry})" if prev != "?" else "ACL reference"


def _pending_libvirt(f: FileFacts, r: Remembered) -> list[DomainUse]:
    return [d for d in f.domains if d.pending and f._counts(d, r.family, r.uid)]


def _family_findings(cfg: Config, f: FileFacts, r: Remembered) -> list[Finding]:
    users = f.users(r.uid, r.family)
    who = f.describe_users(r.uid, r.family)
    boot = boot_time()
    ts = (
        "no timestamp"
        if r.timestamp is None
        else f"timestamp {r.timestamp}" + ("" if r.this_boot else f", not this boot ({boot})")
    )
    remembered = f"remembered {r.family}: {_what(r)}, refcount {r.raw_refcount or 'absent'}, {ts}"
    fix = _recover_command(cfg, f.path)
    restore = RepairKind.RESTORE if users == 0 else RepairKind.REFCOUNT
    manual = _manual_restore(f.path, r) if users == 0 else _manual_refcount(f.path, r, users)
    in_ns = f" (the copy in the private /dev of pid {f.namespace_pid})" if f.namespace_pid else ""

    def finding(kind: Kind, why: str) -> Finding:
        return Finding(
            kind, f.path, f"{remembered}; {who}: {why}{in_ns}", fix, manual, r.family, restore
        )

    pending = _pending_libvirt(f, r)
    if pending and r.this_boot and not r.malformed:
        names = ", ".join(d.name for d in pending)
        return [
            Finding(
                Kind.LIBVIRT_PENDING,
                f.path,
                f"{remembered}; libvirt domain {names}: its status XML is still in "
                f"{cfg.libvirt_run_dir} but its QEMU is gone: libvirtd will restore "
                "this file when it restarts (its reconnect recalls the remembered original); "
                "svirt recover leaves it",
                "start libvirtd again",
                f"{_recover_command(cfg, f.path, take=True)} (only if libvirtd will never run "
                "again: libvirtd would then find nothing remembered and chown the file to "
                "root:root)",
                r.family,
            )
        ]
    if r.malformed:
        return [finding(Kind.REFCOUNT, f"malformed refcount {r.raw_refcount!r}")]
    if not r.this_boot:
        if users == 0:
            kind = Kind.NAMESPACE_COPY if f.namespace_pid else Kind.STALE_TIMESTAMP
            why = "left over from an earlier boot; recover puts the original back"
        else:
            kind = Kind.STALE_TIMESTAMP
            why = (
                "in use, but libvirt would discard this stale state at the next start and "
                f"lose the original; recover sets the count to {users} and the timestamp to "
                "this boot"
            )
        return [finding(kind, why)]
    if r.refcount is None:
        return [finding(Kind.REFCOUNT, "no reference count: libvirt ignores this state")]
    if users == 0:
        kind = Kind.NAMESPACE_COPY if f.namespace_pid else Kind.REFCOUNT
        refused = (
            "Setting different DAC user or group on"
            if r.family == "dac"
            else "Setting different SELinux label on"
        )
        why = (
            f"refcount {r.refcount} but nothing uses the file (a crashed daemon or an "
            f"interrupted detach); the next start would fail with '{refused} … which is "
            "already in use'"
        )
        return [finding(kind, why)]
    if r.refcount != users:
        why = f"refcount {r.refcount} but {users} user{'s' if users != 1 else ''}"
        if r.refcount > users:
            why += ": the original would never be restored"
        else:
            why += ": the original would be restored while a user still runs"
        return [finding(Kind.REFCOUNT, why)]
    return []


def _orphan_finding(
    cfg: Config, f: FileFacts, owners: Sequence[tuple[str, frozenset[int]]]
) -> Finding | None:
    if f.label is None:
        return None
    cats = _categories(f.label)
    if not cats:
        return None
    if any(cats <= owned for _, owned in owners):
        return None
    remembered = next((r for r in f.remembered if r.family == "selinux" and r.original), None)
    evidence = (
        f"label {f.label} carries categories {format_categories(cats)}, which no running or "
        f"labelled domain can reach ({len(owners)} domain labels checked: svirt's ledger and "
        f"records, libvirt's live XML); {f.describe_users(family='selinux')}"
    )
    if remembered is not None and f.users(family="selinux") == 0:
        return Finding(
            Kind.ORPHAN_LABEL,
            f.path,
            evidence + f"; the remembered original is {remembered.original}",
            _recover_command(cfg, f.path),
            _manual_restore(f.path, remembered),
            "selinux",
            RepairKind.RESTORE,
        )
    if remembered is not None:
        # In use (a process holds it): the original stays remembered for its users.
        return Finding(
            Kind.ORPHAN_LABEL,
            f.path,
            evidence + f"; the remembered original is {remembered.original}, kept while the "
            "file is in use: recover puts it back once nothing uses the file",
            _recover_command(cfg, f.path),
            _manual_restore(f.path, remembered),
            "selinux",
        )
    return Finding(
        Kind.ORPHAN_LABEL,
        f.path,
        evidence + "; no remembered original, so recover leaves it: if no static domain with "
        "relabel='no' expects this label, restore the default",
        f"restorecon -v {_q(f.path)}",
        f"chcon -l s0 {_q(f.path)}",
    )


# --- issue 14 (restore): drifted labels, records that need a human ---------------------


def _drift_index(doms: Sequence[_Dom]) -> dict[tuple[int, int], list[tuple[_Dom, str]]]:
    """(device, inode) -> the labelled or running domains that gave the file a label of
    their own, with that label. Device nodes are left out: a VM with a private /dev
    labels only its copy, never the host's node."""
    index: dict[tuple[int, int], list[tuple[_Dom, str]]] = {}
    for d in doms:
        for path, wanted in (d.labels or {}).items():
            if os.path.realpath(path).startswith("/dev/"):
                continue
            key = _stat_key(path)
            if key is not None:
                index.setdefault(key, []).append((d, wanted))
    return index


def _effect(current: str, wanted: str, vm: str) -> str:
    """What a label other than the VM's means for isolation."""
    now, own = _categories(current), _categories(wanted)
    if now is None or own is None:
        return f"{vm} may no longer be able to use it"
    if not now:
        return f"it has no categories: every VM can use it, and {vm} has lost it as its own"
    if not now <= own:
        return f"{vm} can no longer use it (it lacks {format_categories(now - own)})"
    return f"every VM whose categories include {format_categories(now)} can use it, not only {vm}"


def _drift_finding(
    cfg: Config, f: FileFacts, index: dict[tuple[int, int], list[tuple[_Dom, str]]]
) -> Finding | None:
    if f.label is None or f.namespace_pid is not None:
        return None
    if not stat.S_ISREG(f.mode):
        # Regular files only: device nodes are labelled as copies in a VM's /dev, and a
        # listening socket or pipe QEMU created itself carries the label it was made with.
        return None
    users = index.get((f.dev, f.ino), [])
    if not users or any(f.label == wanted for _, wanted in users):
        return None
    d, wanted = users[0]
    remembered = next((r for r in f.remembered if r.family == "selinux" and r.original), None)
    kept = (
        f"; the remembered original {remembered.original} is kept and restored when {d.name} "
        + ("stops" if d.pid is not None else "is restored")
        if remembered is not None
        else ""
    )
    fixes = own_label_fixes(d.name, f.path, wanted, f.label, config=cfg.source)
    return Finding(
        Kind.DRIFTED_LABEL,
        f.path,
        f"{d.origin} domain {d.name} ({d.state}) gave this file the label {wanted}, but it "
        f"carries {f.label} now (relabelled behind its back): {_effect(f.label, wanted, d.name)}"
        f"{kept}. {DRIFT_DO_NOT}",
        fixes[-1].command or _recover_command(cfg, f.path),
        fixes[0].command,
        "selinux",
        RepairKind.RELABEL,
        (d.name,),
        wanted,
    )


def _record_paths(d: _Dom) -> list[str]:
    """The files an svirt record still stands for: its pending paths once a restore
    failed, else every resource it labelled."""
    if d.state == DomainState.RESTORE_FAILED and d.pending_paths:
        return list(dict.fromkeys(p.split(":", 1)[1] for p in d.pending_paths if ":" in p))
    return _resource_paths(d.domain)


def _record_findings(cfg: Config, doms: Sequence[_Dom]) -> list[Finding]:
    """svirt records with no VM, which only a human (or recover, for orphans) ends: a
    labelled domain (``svirt label``; its XML file may be gone: the record says what was
    labelled) or one whose restore failed; an orphan when every file it names is gone."""
    out: list[Finding] = []
    for d in doms:
        if d.origin != "svirt" or d.state not in (
            DomainState.LABELLED,
            DomainState.RESTORE_FAILED,
        ):
            continue
        sl = d.domain.seclabel("selinux")
        pair = (
            f"MCS level {sl.label.split(':', 3)[3]}"
            if sl is not None and sl.label and sl.label.count(":") >= 3
            else "labels"
        )
        paths = _record_paths(d)
        if not any(os.path.lexists(p) for p in paths):
            gone = ", ".join(paths) if paths else "no files at all"
            out.append(
                Finding(
                    Kind.ORPHAN_RECORD,
                    None,
                    f"svirt's record of domain {d.name} ({d.state}) names only files that are "
                    f"gone ({gone}): it holds its {pair} (and QEMU identity) for nothing; "
                    "recover forgets the record and releases them (and any search entry granted "
                    "on their directories), touching none of its files",
                    _recover_command(cfg, None),
                    repair=RepairKind.FORGET,
                    domains=(d.name,),
                )
            )
            continue
        if d.state == DomainState.RESTORE_FAILED:
            evidence = (
                f"svirt domain {d.name} could not restore {len(paths)} path(s) "
                f"({', '.join(paths)}): they keep its labels and it keeps its {pair}; fix the "
                "cause (see the error of the failed restore), then restore them"
            )
        else:
            evidence = (
                f"svirt domain {d.name} is labelled (svirt label) and no VM runs it: its "
                f"{len(paths)} file(s) keep its labels and it keeps its {pair}; once nothing "
                "needs them, release it by name (its XML file is not needed: svirt's record "
                "says what was labelled)"
            )
        out.append(
            Finding(Kind.LABELLED, None, evidence, _restore_command(cfg, d.name), domains=(d.name,))
        )
    return out


def _clash_findings(doms: Sequence[_Dom]) -> list[Finding]:
    running = [d for d in doms if d.pid is not None or (d.origin == "svirt" and not d.dead)]
    labelled: list[tuple[_Dom, bool, frozenset[int], str]] = []
    for d in running:
        sl = d.domain.seclabel("selinux")
        if sl is None or sl.label is None or sl.type is SeclabelType.NONE:
            continue
        cats = _categories(sl.label)
        if cats:
            labelled.append((d, sl.type is SeclabelType.DYNAMIC, cats, sl.label))
    out: list[Finding] = []

    def restart(d: _Dom) -> str:
        if d.origin == "libvirt":
            return f"virsh destroy {_q(d.name)} && virsh start {_q(d.name)}"
        return f"svirt stop {_q(d.name)} && svirt start {_q(d.name)}.xml"

    for i, (a, a_dyn, a_cats, a_label) in enumerate(labelled):
        for b, b_dyn, b_cats, b_label in labelled[i + 1 :]:
            if a_dyn and b_dyn and a_cats == b_cats:
                dyn, other = a, b
                what = "the same dynamic pair as"
            elif a_dyn and not b_dyn and a_cats <= b_cats:
                dyn, other = a, b
                what = "equal to the static label of" if a_cats == b_cats else "dominated by"
            elif b_dyn and not a_dyn and b_cats <= a_cats:
                dyn, other = b, a
                what = "equal to the static label of" if a_cats == b_cats else "dominated by"
            else:
                continue
            dyn_label = a_label if dyn is a else b_label
            other_label = b_label if dyn is a else a_label
            out.append(
                Finding(
                    Kind.CATEGORY_CLASH,
                    None,
                    f"{dyn.origin} domain {dyn.name} runs with the dynamic label {dyn_label}, "
                    f"{what} {other.origin} domain {other.name} ({other_label}): "
                    f"{other.name}'s QEMU can read and write {dyn.name}'s images",
                    restart(dyn),
                    f"or give {other.name} a static label with other categories",
                    domains=(dyn.name, other.name),
                )
            )
    return out


def _dead_findings(cfg: Config, doms: Sequence[_Dom]) -> list[Finding]:
    return [
        Finding(
            Kind.DEAD_DOMAIN,
            None,
            f"svirt domain {d.name} is recorded as {d.state} ({d.source}), but its monitor "
            f"(pid {d.owner}) and QEMU are gone: its files still carry its labels",
            _recover_command(cfg, None),
            repair=RepairKind.RECONCILE,
            domains=(d.name,),
        )
        for d in doms
        if d.dead
    ]


def _fleet_uses(
    cfg: Config, paths: list[str], skipped: list[tuple[str, str]]
) -> dict[str, tuple[DomainUse, ...]]:
    """Fleet ledger hook (issue 15): domains on other hosts that hold a shared file count
    as its users, so their state is never called stale here."""
    from svirt.security.fleet import remote_file_uses

    uses, problem = remote_file_uses(cfg, paths)
    if problem is not None:
        skipped.append(("etcd", problem))
    return {
        p: tuple(
            DomainUse(f"{dom} on host {host}", "fleet", "labelled by that host", None, None)
            for host, dom in holders
        )
        for p, holders in uses.items()
    }


def _fleet_owners(
    cfg: Config, files: Sequence[FileFacts], skipped: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Fleet ledger hook (issue 15): (level, owner) of this host's fleet reservations and
    of the files' levels held by a domain on another host."""
    from svirt.security.fleet import level_owners

    levels = []
    for f in files:
        if f.label is not None and f.label.count(":") >= 3:
            levels.append(f.label.split(":", 3)[3])
    owners, problem = level_owners(cfg, levels)
    if problem is not None:
        skipped.append(("etcd", problem))
    return owners


def examine(cfg: Config, args: Sequence[str] = ()) -> DoctorReport:
    """The doctor: ``args`` are paths and domain names (none: every domain's resources,
    the images directories and every VM's private /dev)."""
    skipped: list[tuple[str, str]] = []
    doms = _domains(cfg, skipped)
    procs = _processes()
    ns_pids = _vm_namespaces(procs, doms)
    facts_by_key: dict[tuple[int, int], tuple[_Target, os.stat_result]] = {}
    for target in _targets(cfg, args, doms, ns_pids):
        try:
            st = os.stat(target.path)
        except OSError as exc:
            skipped.append((target.path, f"cannot examine: {exc.strerror}"))
            continue
        key = (st.st_dev, st.st_ino)
        if key not in facts_by_key:
            facts_by_key[key] = (target, st)
    holders = _holders(procs, set(facts_by_key))
    by_key = _domain_keys(doms)
    remote = _fleet_uses(cfg, [t.path for t, _ in facts_by_key.values()], skipped)
    files: list[FileFacts] = []
    for key, (target, st) in facts_by_key.items():
        try:
            label = host_selinux.getfilecon(target.path)
            remembered = tuple(_remembered(target.path))
        except OSError as exc:
            skipped.append((target.path, f"cannot read xattrs: {exc.strerror}"))
            continue
        files.append(
            FileFacts(
                target.path,
                st.st_dev,
                st.st_ino,
                st.st_mode,
                label,
                st.st_uid,
                st.st_gid,
                remembered,
                tuple(holders.get(key, ())),
                tuple(
                    [d.use() for d in _dir_users(target.path, doms)]
                    if stat.S_ISDIR(st.st_mode)
                    else by_key.get(key, [])
                )
                + remote.get(target.path, ()),
                target.namespace_pid,
            )
        )
    owners: list[tuple[str, frozenset[int]]] = []
    for d in doms:
        sl = d.domain.seclabel("selinux")
        if sl is not None and sl.label and (d.origin == "libvirt" or not d.dead):
            cats = _categories(sl.label)
            if cats is not None:
                owners.append((d.name, cats))
    for level, name in [*_ledger_levels(cfg), *_fleet_owners(cfg, files, skipped)]:
        cats = _categories(level)
        if cats is not None:
            owners.append((name, cats))
    findings: list[Finding] = []
    drift_index = _drift_index(doms)
    for f in files:
        for r in f.remembered:
            findings.extend(_family_findings(cfg, f, r))
        drift = _drift_finding(cfg, f, drift_index)
        orphan = _orphan_finding(cfg, f, owners) if drift is None else None
        if drift is not None:
            findings.append(drift)
        if orphan is not None:
            findings.append(orphan)
    findings += _erased_findings(cfg, doms, files, whole_host=not args)
    # Domain-level findings: all of them for a whole-host check, those of the named
    # domains when names were given, none when only paths were.
    named = {a for a in args if not _is_path(a)}
    if not args or named:
        host = (
            *_clash_findings(doms),
            *_dead_findings(cfg, doms),
            *_record_findings(cfg, doms),
        )
        findings += [f for f in host if not args or any(n in f.domains for n in named)]
    return DoctorReport(
        boot_time(),
        tuple(files),
        tuple(findings),
        tuple(d.use() for d in doms),
        len(procs),
        tuple(skipped),
    )


# --- recover -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecoverAction:
    """One step recover took (or, in a dry run, would take)."""

    what: str  # rollback, reconcile, restore, refcount, manual
    path: str | None
    description: str
    done: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "path": self.path,
            "description": self.description,
            "done": self.done,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class RecoverReport:
    applied: bool
    actions: tuple[RecoverAction, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def failed(self) -> bool:
        return any(a.error for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "actions": [a.to_dict() for a in self.actions],
            "findings": [f.to_dict() for f in self.findings],
        }


class _Changed(SvirtError):
    """The file's remembered state changed since the scan: someone else is at work."""

    def __init__(self) -> None:
        super().__init__(
            "its remembered state changed since the scan (a start or stop in progress?): "
            "run svirt recover again"
        )


def _set_count(target: str, r: Remembered, users: int, *, force_boot: bool = False) -> str:
    if r.uid is not None:
        value = f"{users} {r.original or '- -'} {boot_time()}"
        os.setxattr(target, f"{ACL_XATTR_PREFIX}{r.uid}", value.encode())
        return f"ACL reference of uid {r.uid}: count {r.raw_refcount} -> {users}"
    _, ref_name, ts_name = xattr_names(r.family)
    os.setxattr(target, ref_name, str(users).encode())
    text = f"{ref_name} {r.raw_refcount or 'absent'} -> {users}"
    if force_boot and r.original is None:
        raise SecurityError(f"no remembered original in {xattr_names(r.family)[0]}")
    if not r.this_boot or force_boot:
        os.setxattr(target, ts_name, str(boot_time()).encode())
        text += f", {ts_name} -> {boot_time()}"
    return text


def _plan(f: FileFacts, take: bool = False) -> list[tuple[Remembered, RepairKind, int]]:
    plan: list[tuple[Remembered, RepairKind, int]] = []
    for r in f.remembered:
        if not take and _pending_libvirt(f, r):
            continue  # libvirtd restores it when it restarts
        users = f.users(r.uid, r.family, take_pending=take)
        stale = r.malformed or not r.this_boot or r.refcount is None
        if users == 0:
            plan.append((r, RepairKind.RESTORE, 0))
        elif stale or r.refcount != users:
            plan.append((r, RepairKind.REFCOUNT, users))
    # SELinux label, then owner (chown can rewrite the ACL mask), then ACL entries.
    order = {"selinux": 0, "dac": 1}
    plan.sort(key=lambda p: order.get(p[0].family, 2))
    return plan


def _describe(f: FileFacts, r: Remembered, kind: RepairKind, users: int) -> str:
    if kind is RepairKind.RESTORE:
        names = ", ".join(r.names)
        return f"restore {r.family}: put back the remembered {_what(r)}, then remove {names}"
    return (
        f"fix {r.family} count: {r.raw_refcount or 'absent'} -> {users} "
        f"({f.describe_users(r.uid, r.family)})"
        + ("" if r.this_boot else "; timestamp -> this boot")
    )


def repair_file(
    f: FileFacts,
    *,
    apply: bool,
    take: bool = False,
    journal: Journal | None = None,
    protected: Sequence[str] = (),
    cfg: Config | None = None,
) -> list[RecoverAction]:
    """Repair one examined file (see :func:`recover`); a dry run unless ``apply``.
    ``take``: files of a crashed libvirt domain too (else left to libvirtd). With a
    ``journal`` (recover passes svirt's), the repair is journalled like any labelling."""
    plan = _plan(f, take)
    if not plan:
        return []
    if not apply:
        return [
            RecoverAction(kind.value, f.path, _describe(f, r, kind, users))
            for r, kind, users in plan
        ]
    try:
        fd = os.open(f.path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        return [RecoverAction("restore", f.path, "open", error=f"cannot open: {exc.strerror}")]
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (f.dev, f.ino):
            return [
                RecoverAction(
                    "restore", f.path, "open", error="replaced by another file since the scan"
                )
            ]
    finally:
        os.close(fd)
    # One transaction per file, like every other change svirt makes: the inode pinned
    # (and re-checked), protected paths refused, libvirt's metadata lock held, the
    # file's whole prior state journalled, and a failure or crash rolled back. A count
    # is corrected in place; a restore first makes the remembered state one valid user
    # of this boot, then runs the driver's own restore operation, which recalls it.
    actions: list[RecoverAction] = []
    drivers = _restorers(cfg)
    for r, kind, users in plan:
        fix = _Recount(f, r, kind, users)
        ops = [LabelOp(_Recount.name, Action.SET, f.path, r.family, False, "recover")]
        restore = _restore_op(f.path, r) if kind is RepairKind.RESTORE else None
        if restore is not None:
            ops.append(restore)
        table: dict[str, Any] = {_Recount.name: fix, **drivers}
        tx = Transaction(
            cast("dict[str, SecurityDriver]", table),
            journal,
            remember=True,
            protected=protected,
            # a node that cannot be opened for the lock (a device copy in a VM's
            # /dev) is still recalled: its xattrs were re-checked just before
            recall_unlocked=True,
            allow_hard_links=cfg.allow_hard_links if cfg is not None else False,
        )
        try:
            result = tx.run("svirt-recover", ops)
        except SvirtError as exc:
            actions.append(
                RecoverAction(kind.value, f.path, _describe(f, r, kind, users), error=str(exc))
            )
            continue
        text = fix.text
        if restore is not None:
            outcome = result.outcomes[-1][1] if len(result.outcomes) == len(ops) else None
            left = {n for n in r.names if _has_xattr(f.path, n)}
            if outcome is None or outcome.kind not in (Outcome.DONE, Outcome.SKIPPED) or left:
                actions.append(
                    RecoverAction(
                        kind.value,
                        f.path,
                        _describe(f, r, kind, users),
                        error=f"the {r.family} driver could not restore it ({outcome})",
                    )
                )
                continue
            text = f"{_restored(r)}; removed {', '.join(r.names)}"
        log.debug("recover: %s: %s", f.path, text)
        actions.append(RecoverAction(kind.value, f.path, text, done=True))
    return actions


def _has_xattr(path: str, name: str) -> bool:
    try:
        os.getxattr(path, name)
    except OSError:
        return False
    return True


def _restorers(cfg: Config | None) -> dict[str, SecurityDriver]:
    """The drivers whose restore operations recover runs (whatever the configured stack:
    a file may carry libvirt's SELinux memory on a host where svirt runs without it)."""
    from svirt.conf import config_from_mapping

    base = cfg if cfg is not None else config_from_mapping({}, source="<recover>")
    out: dict[str, SecurityDriver] = {"dac": DACDriver(base)}
    try:
        out["selinux"] = SELinuxDriver(base)
    except (SvirtError, OSError) as exc:
        log.debug("recover: no SELinux driver: %s", exc)
    return out


def _restore_op(path: str, r: Remembered) -> LabelOp | None:
    """The driver's own restore of one remembered family (recalling the original)."""
    if r.family == "selinux":
        return LabelOp("selinux", Action.RESTORE, path, None, True, "recover")
    if r.family == "dac":
        ids = _owner_ids(r.original or "")
        value = f"+{ids[0]}:+{ids[1]}" if ids is not None else None
        return LabelOp("dac", Action.RESTORE, path, value, True, "recover")
    if r.uid is not None:
        return LabelOp("dac", Action.RESTORE, path, f"+{r.uid}:+{r.uid}", True, "recover")
    return None


def _restored(r: Remembered) -> str:
    if r.family == "selinux":
        return f"label -> {r.original}"
    if r.family == "dac":
        ids = _owner_ids(r.original or "")
        return f"owner -> {ids[0]}:{ids[1]}" if ids else "owner"
    prev = r.original.split()[0] if r.original else "-"
    return "ACL entry " + (
        f"u:{r.uid} removed" if prev == "-" else f"u:{r.uid}:{_perm_text(int(prev))}"
    )


class _Recount:
    """recover's own step, run as an operation of the file's :class:`Transaction`
    (``op.value`` names the family). It re-reads the remembered state under the lock (a
    libvirt or svirt start changes the xattrs under the same lock before it uses the file,
    so unchanged xattrs mean the scan still holds), then sets the count: to the users
    found, or, before a restore, to one valid user of this boot so that the driver's
    recall puts the original back."""

    name = "recover"

    def __init__(self, f: FileFacts, r: Remembered, kind: RepairKind, users: int) -> None:
        self.f, self.r, self.kind, self.users = f, r, kind, users
        self.text = ""

    def apply(self, op: LabelOp, target: str | None = None) -> Outcome:
        assert target is not None
        st = os.stat(target)
        if (st.st_dev, st.st_ino) != (self.f.dev, self.f.ino):
            raise SecurityError("replaced by another file since the scan")
        now = {x.family: x for x in _remembered(target)}.get(self.r.family)
        if now != self.r:
            raise _Changed
        try:
            if self.kind is RepairKind.REFCOUNT:
                self.text = _set_count(target, self.r, self.users)
            else:
                _check_original(self.r)
                _set_count(target, self.r, 1, force_boot=True)
        except OSError as exc:
            raise SecurityError(exc.strerror or str(exc)) from None
        return Outcome.DONE


def _check_original(r: Remembered) -> None:
    """A remembered original recover would not put back: report it, change nothing."""
    if r.family == "selinux":
        if r.original is None:
            raise SecurityError("no remembered label; left as is")
        try:
            SecurityContext.parse(r.original)
        except ContextError:
            raise SecurityError(
                f"the remembered label {r.original!r} is not a valid context; left as is"
            ) from None
    elif r.family == "dac":
        if r.original is None or _owner_ids(r.original) is None:
            raise SecurityError(f"the remembered owner {r.original!r} is malformed; left as is")
    elif r.original is None:
        raise SecurityError(f"malformed ACL reference {r.raw_refcount!r}; left as is")


def recover(
    cfg: Config,
    args: Sequence[str] = (),
    *,
    apply: bool = False,
    take_from_libvirt: bool = False,
) -> RecoverReport:
    """Repair what the doctor finds: journal rollback and dead monitors first, then each
    file. Nothing changes unless ``apply``. Files of a libvirt domain whose status XML
    is still there (libvirtd and QEMU killed) are left to libvirtd, which restores them
    when it restarts, unless ``take_from_libvirt``."""
    actions: list[RecoverAction] = []
    mgr = SecurityManager(cfg)
    for a in mgr.recover(apply=apply):
        if a.what == "restore":
            actions.append(
                RecoverAction(
                    "rollback",
                    a.path,
                    f"put back the state journalled before transaction {a.tx} of domain "
                    f"{a.domain} (its svirt process died mid-way)",
                    done=apply,
                )
            )
        elif a.what == "replaced":
            actions.append(
                RecoverAction(
                    "rollback",
                    a.path,
                    f"transaction {a.tx} of {a.domain}: the path names another file now; "
                    "not touched",
                )
            )
    if apply:
        for name in reconcile(cfg, mgr):
            actions.append(
                RecoverAction("reconcile", None, f"restored the labels of {name}", done=True)
            )
    else:
        for rec in mgr.store.records():
            if rec.state in RECONCILED and not rec.owner_alive() and not qemu_alive(rec):
                actions.append(
                    RecoverAction(
                        "reconcile",
                        None,
                        f"restore the labels of {rec.domain.name}: its monitor and QEMU are gone",
                    )
                )
    report = examine(cfg, args)
    for f in report.files:
        actions.extend(
            repair_file(
                f,
                apply=apply,
                take=take_from_libvirt,
                journal=mgr.journal,
                # the state directory is never a disk, as in every other transaction
                protected=(*cfg.protected_paths, str(cfg.state_dir)),
                cfg=cfg,
            )
        )
    files = {f.path: f for f in report.files}
    for finding in report.findings:
        if finding.kind is Kind.LIBVIRT_PENDING and take_from_libvirt:
            continue  # repaired above
        if finding.repair is RepairKind.RELABEL and finding.path in files:
            actions.append(_relabel(cfg, mgr, files[finding.path], finding, apply=apply))
        elif finding.repair is RepairKind.FORGET:
            actions.append(_forget(mgr, finding, apply=apply))
        elif finding.repair is None:
            actions.append(
                RecoverAction("manual", finding.path, f"{finding.evidence}; fix: {finding.fix}")
            )
    return RecoverReport(apply, tuple(actions), report.findings)


# --- issue 14 (restore): put a VM's label back, forget orphan records ------------------


class _SameLabel:
    """recover's check, run as the first operation of the relabel's transaction (under
    the file's metadata lock, which a stop or restore of the domain also takes): the file
    is the inode scanned, still carries the label seen then, and the domain still gives
    it the label recover puts back (else someone else is at work, and nothing changes).
    The label alone is not enough: a domain restored since the scan may have put back
    an original equal to the drifted label."""

    name = "recover"

    def __init__(self, cfg: Config, f: FileFacts, vm: str, wanted: str) -> None:
        self.cfg = cfg
        self.f = f
        self.vm = vm
        self.wanted = wanted

    def _still_wanted(self) -> bool:
        """The same rule as the scan (:func:`_domains`), read again now."""
        users = _drift_index(_domains(self.cfg, [])).get((self.f.dev, self.f.ino), [])
        return any(d.name == self.vm and wanted == self.wanted for d, wanted in users)

    def apply(self, op: LabelOp, target: str | None = None) -> Outcome:
        assert target is not None
        st = os.stat(target)
        if (st.st_dev, st.st_ino) != (self.f.dev, self.f.ino):
            raise SecurityError("replaced by another file since the scan")
        if host_selinux.getfilecon(target) != self.f.label:
            raise SecurityError(
                "its label changed since the scan (a start or stop in progress?): "
                "run svirt recover again"
            )
        if not self._still_wanted():
            raise SecurityError(
                f"domain {self.vm} no longer gives it the label {self.wanted} (stopped or "
                "restored since the scan): left as it is; run svirt recover again"
            )
        return Outcome.DONE


def _relabel(
    cfg: Config, mgr: SecurityManager, f: FileFacts, finding: Finding, *, apply: bool
) -> RecoverAction:
    """A VM's drifted label: the VM's own label back, in a journalled transaction (pinned
    inode, protected paths, metadata lock, rollback), without touching what is
    remembered (the original is still restored when the VM stops)."""
    vm = finding.domains[0] if finding.domains else "the domain"
    wanted = finding.label
    describe = f"{f.label} -> {wanted} (the label of domain {vm})"
    if not apply or wanted is None:
        return RecoverAction("relabel", f.path, describe)
    drivers = _restorers(cfg)
    if "selinux" not in drivers:
        return RecoverAction("relabel", f.path, describe, error="no SELinux driver on this host")
    table: dict[str, Any] = {
        _SameLabel.name: _SameLabel(cfg, f, vm, wanted),
        "selinux": drivers["selinux"],
    }
    tx = Transaction(
        cast("dict[str, SecurityDriver]", table),
        mgr.journal,
        remember=True,
        protected=(*cfg.protected_paths, str(cfg.state_dir)),
        allow_hard_links=True,  # the file is the VM's already; this only gives it back
    )
    ops = [
        LabelOp(_SameLabel.name, Action.SET, f.path, None, False, "recover"),
        LabelOp("selinux", Action.SET, f.path, wanted, False, f"recover ({vm})"),
    ]
    try:
        tx.run("svirt-recover", ops)
    except SvirtError as exc:
        return RecoverAction("relabel", f.path, describe, error=str(exc))
    return RecoverAction("relabel", f.path, describe, done=True)


def _forget(mgr: SecurityManager, finding: Finding, *, apply: bool) -> RecoverAction:
    """An orphan record: release its MCS pair and QEMU identity and drop it, through the
    same take-and-restore path as ``svirt restore`` (one transaction, committed with the
    release), with every one of its files that exists now left out: none of them is
    touched. What was granted for them elsewhere (ACL mode's search entries on their
    directories, which exist) is given back: no record could give it back later."""
    name = finding.domains[0]
    describe = (
        f"the record of domain {name} (every file it names is gone): release its MCS pair "
        "and QEMU identity (and any search entry granted on its directories), touch none of "
        "its files"
    )
    if not apply:
        return RecoverAction("forget", None, describe)
    rec = mgr.store.read(name)
    if rec is None or rec.owner is None:
        return RecoverAction("forget", None, describe, error="the record is gone already")
    if rec.state not in (DomainState.LABELLED, DomainState.RESTORE_FAILED):
        return RecoverAction("forget", None, describe, error=f"the domain is {rec.state} now")
    pending = rec.pending if rec.state == DomainState.RESTORE_FAILED else None
    paths = [p.split(":", 1)[1] for p in pending or ()] or _resource_paths(rec.domain)
    back = [p for p in paths if os.path.lexists(p)]
    if back:
        return RecoverAction(
            "forget",
            None,
            describe,
            error=f"{back[0]} exists again: restore the domain instead (svirt restore {name})",
        )
    if not mgr.store.take(name, (rec.state,), rec.owner, DomainState.RESTORING):
        return RecoverAction("forget", None, describe, error="another svirt process is changing it")
    try:
        mine = set(paths)
        mgr.restore_and_release(
            rec.domain, pending, exclude=lambda p: p in mine and os.path.lexists(p)
        )
    except SvirtError as exc:
        return RecoverAction("forget", None, describe, error=str(exc))
    return RecoverAction(
        "forget",
        None,
        f"the record of domain {name}: MCS pair and QEMU identity released, record removed",
        done=True,
    )
