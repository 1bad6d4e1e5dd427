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
- an svirt record whose monitor and QEMU are both gone.

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
import errno
import logging
import os
import re
import shlex
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svirt.conf import Config
from svirt.context import MLSRange, SecurityContext, format_categories
from svirt.domain.model import Domain, SeclabelType
from svirt.domain.resources import ResourceKind, domain_resources
from svirt.errors import ContextError, SecurityError, StateError, SvirtError
from svirt.host import acl as host_acl
from svirt.host import devices as host_devices
from svirt.host import selinux as host_selinux
from svirt.host.namespace import mount_namespace_id
from svirt.launch.lifecycle import qemu_alive, reconcile
from svirt.policy.verify import Skipped, load_live_domain
from svirt.security.dac import ACL_XATTR_PREFIX, parse_acl_ref, parse_ids
from svirt.security.manager import SecurityManager
from svirt.security.remember import XATTR_PREFIX, boot_time, is_this_boot, xattr_names
from svirt.security.transaction import MetadataLocks
from svirt.state.domains import DomainRecord, DomainStore

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

_ACTIVE_STATES = ("starting", "launching", "running", "stopping")
_PROC_ROOT = re.compile(r"^/proc/(\d+)/root(/.*)$")
_MAX_DEV_ENTRIES = 10_000  # a VM's private /dev is a 64 KiB tmpfs; refuse to walk a huge one


class Kind(enum.Enum):
    STALE_TIMESTAMP = "stale-timestamp"
    REFCOUNT = "refcount"
    ORPHAN_LABEL = "orphan-label"
    CATEGORY_CLASH = "category-clash"
    NAMESPACE_COPY = "namespace-copy"
    DEAD_DOMAIN = "dead-domain"


class RepairKind(enum.Enum):
    RESTORE = "restore"  # put the remembered original back, then remove the xattrs
    REFCOUNT = "refcount"  # set the count to the users (and the timestamp to this boot)
    RECONCILE = "reconcile"  # a dead monitor: svirt restores the domain's labels


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


@dataclass(frozen=True, slots=True)
class Remembered:
    """One family of remembered xattrs on one file, as found.

    ``family`` is ``selinux`` or ``dac`` (libvirt's names) or ``acl_<uid>`` (svirt's ACL
    reference). ``original`` is the remembered label, ``+uid:+gid`` owner, or for ACLs
    the replaced entry and mask as ``prev mask``.
    """

    family: str
    names: tuple[str, ...]  # the xattrs present
    original: str | None
    refcount: int | None
    raw_refcount: str | None
    timestamp: str | None
    this_boot: bool
    uid: int | None = None  # acl_<uid>

    @property
    def malformed(self) -> bool:
        return self.raw_refcount is not None and self.refcount is None


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

    def users(self, uid: int | None = None) -> int:
        """Domains listing the file plus other processes holding it (``uid``: only
        those running as that user, for an ACL reference)."""
        keys: set[tuple[str, str]] = set()
        dom_pids = {d.pid for d in self.domains if d.pid is not None}
        for d in self.domains:
            if uid is None or d.uid is None or d.uid == uid:
                keys.add((d.origin, d.name))
        for h in self.holders:
            if (uid is None or h.uid == uid) and h.pid not in dom_pids:
                keys.add(("pid", str(h.pid)))
        return len(keys)

    def describe_users(self, uid: int | None = None) -> str:
        parts = [
            f"{d.origin} domain {d.name} ({d.state})"
            for d in self.domains
            if uid is None or d.uid is None or d.uid == uid
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

    def use(self) -> DomainUse:
        return DomainUse(self.name, self.origin, self.state, self.pid, self.uid)


def _dac_uid(domain: Domain) -> int | None:
    sl = domain.seclabel("dac")
    if sl is None or not sl.label:
        return None
    try:
        return parse_ids(sl.label)[0]
    except SecurityError:
        return None


def _domains(cfg: Config, skipped: list[tuple[str, str]]) -> list[_Dom]:
    out: list[_Dom] = []
    try:
        records: list[DomainRecord] = list(DomainStore(cfg.state_dir).records())
    except StateError as exc:
        skipped.append((exc.source or str(cfg.state_dir), exc.message))
        records = []
    for rec in records:
        alive = qemu_alive(rec)
        dead = rec.state in _ACTIVE_STATES and not alive and not rec.owner_alive()
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
            )
        )
    try:
        paths = sorted(p for p in cfg.libvirt_run_dir.iterdir() if p.suffix == ".xml")
    except OSError:
        paths = []
    for path in paths:
        live = load_live_domain(path, "libvirt")
        if isinstance(live, Skipped):
            log.debug("doctor: %s: %s", live.path, live.reason)
            continue
        out.append(
            _Dom(
                live.name,
                "libvirt",
                live.state or "running",
                live.pid,
                _dac_uid(live.domain),
                live.domain,
                path,
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


def _domain_keys(doms: Sequence[_Dom]) -> dict[tuple[int, int], list[_Dom]]:
    """Which domains list each (device, inode): host paths, and for a running VM with
    its own mount namespace, its private copies of /dev nodes."""
    index: dict[tuple[int, int], list[_Dom]] = {}
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
                if all(u is not d for u in users):
                    users.append(d)
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
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
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


def _get(path: str, name: str) -> str | None:
    try:
        return os.getxattr(path, name).decode("utf-8", "replace")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _remembered(path: str) -> list[Remembered]:
    out: list[Remembered] = []
    for drv in ("selinux", "dac"):
        names = xattr_names(drv)
        values = [_get(path, n) for n in names]
        if all(v is None for v in values):
            continue
        label, ref, ts = values
        count = int(ref) if ref is not None and ref.isdigit() else None
        out.append(
            Remembered(
                drv,
                tuple(n for n, v in zip(names, values, strict=True) if v is not None),
                label,
                count,
                ref,
                ts,
                ts is not None and is_this_boot(ts),
            )
        )
    try:
        all_names = os.listxattr(path)
    except OSError:
        all_names = []
    for name in sorted(all_names):
        if not name.startswith(ACL_XATTR_PREFIX):
            continue
        suffix = name[len(ACL_XATTR_PREFIX) :]
        raw = _get(path, name)
        if raw is None or not suffix.isdigit():
            continue
        acl_ref = parse_acl_ref(raw)
        parts = raw.split()
        out.append(
            Remembered(
                f"acl_{suffix}",
                (name,),
                f"{parts[1]} {parts[2]}" if acl_ref is not None else None,
                acl_ref.refcount if acl_ref is not None else None,
                parts[0] if parts else raw,
                acl_ref.timestamp if acl_ref is not None else None,
                acl_ref is not None and acl_ref.this_boot,
                int(suffix),
            )
        )
    return out


def _has_remembered(path: str) -> bool:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False
    return any(n.startswith((XATTR_PREFIX, ACL_XATTR_PREFIX)) for n in names)


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
            elif _has_remembered(entry.path):
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


def _recover_command(cfg: Config, path: str | None) -> str:
    conf = f" --config {_q(cfg.source)}" if not cfg.source.startswith("<") else ""
    return f"svirt recover{conf} --apply" + (f" {_q(path)}" if path else "")


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


def _family_findings(cfg: Config, f: FileFacts, r: Remembered) -> list[Finding]:
    users = f.users(r.uid)
    who = f.describe_users(r.uid)
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
        why = (
            f"refcount {r.refcount} but nothing uses the file (a crashed daemon or an "
            "interrupted detach); the next start would fail with 'Setting different SELinux "
            "label on … which is already in use'"
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
        f"records, libvirt's live XML); {f.describe_users()}"
    )
    if remembered is not None and f.users() == 0:
        return Finding(
            Kind.ORPHAN_LABEL,
            f.path,
            evidence + f"; the remembered original is {remembered.original}",
            _recover_command(cfg, f.path),
            _manual_restore(f.path, remembered),
            "selinux",
            RepairKind.RESTORE,
        )
    return Finding(
        Kind.ORPHAN_LABEL,
        f.path,
        evidence + "; no remembered original, so recover leaves it: if no static domain with "
        "relabel='no' expects this label, restore the default",
        f"restorecon -v {_q(f.path)}",
        f"chcon -l s0 {_q(f.path)}",
    )


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
                    d.use()
                    for d in (
                        _dir_users(target.path, doms)
                        if stat.S_ISDIR(st.st_mode)
                        else by_key.get(key, ())
                    )
                ),
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
    for level, name in _ledger_levels(cfg):
        cats = _categories(level)
        if cats is not None:
            owners.append((name, cats))
    findings: list[Finding] = []
    for f in files:
        for r in f.remembered:
            findings.extend(_family_findings(cfg, f, r))
        orphan = _orphan_finding(cfg, f, owners)
        if orphan is not None:
            findings.append(orphan)
    # Domain-level findings: all of them for a whole-host check, those of the named
    # domains when names were given, none when only paths were.
    named = {a for a in args if not _is_path(a)}
    if not args or named:
        host = (*_clash_findings(doms), *_dead_findings(cfg, doms))
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


class _Changed(Exception):
    """The file's remembered state changed since the scan: someone else is at work."""


def _restore_selinux(target: str, r: Remembered) -> str:
    if r.original is not None:
        try:
            SecurityContext.parse(r.original)
        except ContextError:
            raise SecurityError(
                f"the remembered label {r.original!r} is not a valid context; left as is"
            ) from None
        if host_selinux.getfilecon(target) != r.original:
            host_selinux.setfilecon(target, r.original)
        if host_selinux.getfilecon(target) != r.original:
            raise SecurityError(f"the label did not become {r.original}; xattrs kept")
        return f"label -> {r.original}"
    return "no remembered label"


def _restore_dac(target: str, r: Remembered) -> str:
    if r.original is not None:
        ids = _owner_ids(r.original)
        if ids is None:
            raise SecurityError(f"the remembered owner {r.original!r} is malformed; left as is")
        st = os.stat(target)
        if (st.st_uid, st.st_gid) != ids:
            try:
                acl: bytes | None = os.getxattr(target, host_acl.ACL_XATTR)
            except OSError:
                acl = None
            os.chown(target, *ids)
            if acl is not None:
                # chown may rewrite the ACL mask: put the ACL back as it was.
                os.setxattr(target, host_acl.ACL_XATTR, acl)
        return f"owner -> {ids[0]}:{ids[1]}"
    return "no remembered owner"


def _restore_acl(target: str, r: Remembered) -> str:
    assert r.uid is not None
    if r.original is None:
        raise SecurityError(f"malformed ACL reference {r.raw_refcount!r}; left as is")
    prev, mask = (None if p == "-" else int(p) for p in r.original.split())
    acl, _ = host_acl.read_acl(target)
    acl = acl.with_named_user(r.uid, prev)
    acl = acl.with_mask(mask) if mask is not None else acl.with_mask()
    host_acl.write_acl(target, acl)
    return "ACL entry " + (
        f"u:{r.uid} removed" if prev is None else f"u:{r.uid}:{_perm_text(prev)}"
    )


def _set_count(target: str, r: Remembered, users: int) -> str:
    if r.uid is not None:
        value = f"{users} {r.original or '- -'} {boot_time()}"
        os.setxattr(target, f"{ACL_XATTR_PREFIX}{r.uid}", value.encode())
        return f"ACL reference of uid {r.uid}: count {r.raw_refcount} -> {users}"
    _, ref_name, ts_name = xattr_names(r.family)
    os.setxattr(target, ref_name, str(users).encode())
    text = f"{ref_name} {r.raw_refcount or 'absent'} -> {users}"
    if not r.this_boot:
        os.setxattr(target, ts_name, str(boot_time()).encode())
        text += f", {ts_name} -> {boot_time()}"
    return text


def _repair_family(target: str, r: Remembered, users: int, kind: RepairKind) -> str:
    # Re-read under the lock: a libvirt or svirt start changes the xattrs under the same
    # lock before it uses the file, so unchanged xattrs mean the scan still holds.
    now = {x.family: x for x in _remembered(target)}.get(r.family)
    if now != r:
        raise _Changed
    if kind is RepairKind.REFCOUNT:
        return _set_count(target, r, users)
    if r.family == "selinux":
        text = _restore_selinux(target, r)
    elif r.family == "dac":
        text = _restore_dac(target, r)
    else:
        text = _restore_acl(target, r)
    # Only now that the original is back are the xattrs that remembered it removed.
    for name in r.names:
        try:
            os.removexattr(target, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
    return f"{text}; removed {', '.join(r.names)}"


def _plan(f: FileFacts) -> list[tuple[Remembered, RepairKind, int]]:
    plan: list[tuple[Remembered, RepairKind, int]] = []
    for r in f.remembered:
        users = f.users(r.uid)
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
        f"({f.describe_users(r.uid)})" + ("" if r.this_boot else "; timestamp -> this boot")
    )


def repair_file(f: FileFacts, *, apply: bool) -> list[RecoverAction]:
    """Repair one examined file (see :func:`recover`); a dry run unless ``apply``."""
    plan = _plan(f)
    if not plan:
        return []
    if not apply:
        return [
            RecoverAction(kind.value, f.path, _describe(f, r, kind, users))
            for r, kind, users in plan
        ]
    actions: list[RecoverAction] = []
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
        target = f"/proc/self/fd/{fd}"
        with MetadataLocks([f.path], {f.path: target}):
            for r, kind, users in plan:
                try:
                    text = _repair_family(target, r, users, kind)
                except _Changed:
                    actions.append(
                        RecoverAction(
                            kind.value,
                            f.path,
                            _describe(f, r, kind, users),
                            error="its remembered state changed since the scan (a start or "
                            "stop in progress?): run svirt recover again",
                        )
                    )
                except (OSError, SvirtError, ValueError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    actions.append(
                        RecoverAction(
                            kind.value, f.path, _describe(f, r, kind, users), error=str(reason)
                        )
                    )
                else:
                    log.debug("recover: %s: %s", f.path, text)
                    actions.append(RecoverAction(kind.value, f.path, text, done=True))
    except SvirtError as exc:
        actions.append(RecoverAction("restore", f.path, "lock", error=str(exc)))
    finally:
        os.close(fd)
    return actions


def recover(cfg: Config, args: Sequence[str] = (), *, apply: bool = False) -> RecoverReport:
    """Repair what the doctor finds: journal rollback and dead monitors first, then each
    file. Nothing changes unless ``apply``."""
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
            if rec.state in _ACTIVE_STATES and not rec.owner_alive() and not qemu_alive(rec):
                actions.append(
                    RecoverAction(
                        "reconcile",
                        None,
                        f"restore the labels of {rec.domain.name}: its monitor and QEMU are gone",
                    )
                )
    report = examine(cfg, args)
    for f in report.files:
        actions.extend(repair_file(f, apply=apply))
    for finding in report.findings:
        if finding.repair is None:
            actions.append(
                RecoverAction("manual", finding.path, f"{finding.evidence}; fix: {finding.fix}")
            )
    return RecoverReport(apply, tuple(actions), report.findings)
