"""The daemonless VM lifecycle: ``svirt start``/``stop``, the per-VM monitor, reconciling.

``svirt start`` forks a small monitor process (like podman's conmon) and waits for it to
say "ready" or "failed". The monitor, detached in its own session:

1. generates the labels (MCS ledger), labels every resource in one transaction;
2. builds QEMU's command line, binds the QMP socket, and spawns QEMU confined: private
   ``/dev``, the VM's SELinux exec context where SELinux is enabled, the QEMU identity;
3. records the domain as running (``<state_dir>/domains/<name>.xml``) and waits until
   QMP answers, then reports to ``svirt start`` and keeps waiting, for QEMU's exit;
4. when QEMU exits, for any reason, restores every label and owner, releases the MCS
   level and removes the record.

Any step failing undoes what was done before it (labels restored, ledger released,
QEMU killed, record removed) and the reason comes back to ``svirt start`` as one line.
A monitor that dies is noticed by the next svirt command (:func:`reconcile`), which
restores the labels of a domain whose QEMU is gone too.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import pickle
import signal
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from svirt.conf import Config
from svirt.domain.model import Disk, Domain
from svirt.domain.resources import disk_resources
from svirt.errors import PREFIX_OPERATION_INVALID, LaunchError, StateError, SvirtError
from svirt.host import selinux as host_selinux
from svirt.host.ids import Gid, Identity, Uid, resolve_identity
from svirt.host.namespace import (
    DevPlan,
    dev_submounts,
    domain_dev_paths,
    plan_private_dev,
    populate_in_namespace,
    remove_from_namespace,
    run_in_namespace,
)
from svirt.host.procs import pid_alive
from svirt.launch.preflight import check_before_start
from svirt.launch.process import bind_monitor_socket, spawn, wait_exit
from svirt.launch.qemu import (
    build_command,
    disk_blockdevs,
    disk_device,
    disk_device_id,
    kvm_usable,
    qemu_escape,
)
from svirt.launch.qmp import QMPClient
from svirt.security import remember as rem
from svirt.security import report as rep
from svirt.security.dac import DACDriver, parse_ids
from svirt.security.driver import Action, LabelOp
from svirt.security.manager import SecurityManager
from svirt.security.transaction import Transaction
from svirt.state.db import connect, connections_open, write_transaction
from svirt.state.domains import DomainRecord, DomainState, DomainStore
from svirt.state.originals import KeptOriginals
from svirt.state.reports import OutcomeReports

__all__ = [
    "RECONCILED",
    "HotplugResult",
    "StartResult",
    "StopResult",
    "attach_disk",
    "detach_disk",
    "qemu_alive",
    "reconcile",
    "runtime_paths",
    "start_domain",
    "stop",
    "stop_domain",
]

log = logging.getLogger(__name__)
_READY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class StartResult:
    name: str
    pid: int
    label: str | None
    imagelabel: str | None
    enforced: bool
    notes: tuple[str, ...]
    seconds: float
    warnings: tuple[str, ...] = ()
    # issue 14: what happened to each resource (applied, skipped and why, left)
    outcomes: tuple[rep.ResourceOutcome, ...] = ()

    @property
    def imagelabel_status(self) -> str:
        """The image label and whether it was applied ("not applied (relabel='no')")."""
        return rep.image_label_status(self.imagelabel, self.outcomes)


@dataclass(frozen=True, slots=True)
class StopResult:
    """How QEMU stopped and what the restore did to each resource (issue 14)."""

    name: str
    how: str  # "powered down", "quit", "terminated", "killed", "already stopped"
    outcomes: tuple[rep.ResourceOutcome, ...] = ()
    reported: bool = True  # False: the restore recorded no report (state db unwritable)

    @property
    def summary(self) -> str:
        if not self.reported:
            return (
                "its monitor recorded no report of the restore (the state database could "
                "not be written?); see 'svirt doctor " + self.name + "'"
            )
        return rep.summary(self.outcomes)

    @property
    def reinstated(self) -> list[str]:
        """The warning of each original put back from svirt's own copy."""
        return [
            rem.erased_warning(o.path, o.driver, self.name, o.reinstated)
            for o in self.outcomes
            if o.reinstated is not None
        ]

    @property
    def notes(self) -> list[str]:
        """One note per read-only or shareable medium left as libvirt leaves it."""
        return rep.shared_notes(self.outcomes)


@dataclass(frozen=True, slots=True)
class HotplugResult:
    """The domain after a hotplug, and what happened to the disk's files."""

    domain: Domain
    outcomes: tuple[rep.ResourceOutcome, ...] = ()

    @property
    def summary(self) -> str:
        return rep.summary(self.outcomes)


def _vm_label(domain: Domain) -> str | None:
    sl = domain.seclabel("selinux")
    return sl.label if sl is not None else None


def runtime_paths(cfg: Config, name: str) -> tuple[Path, Path]:
    """(QMP socket, QEMU log) of a domain, under the state directory."""
    d = cfg.state_dir / "qemu"
    return d / f"{name}.qmp", d / f"{name}.log"


def in_private_dev(private_dev: bool, path: str) -> bool:
    """Whether a labelled path is a device node QEMU sees only as a copy in its private
    ``/dev``: then, as libvirt does, only the copy is labelled (the host's node is left
    alone), and nothing needs restoring (the copy goes with the namespace). Whether a VM
    has a private ``/dev`` is fixed when it starts and kept in its record."""
    if not private_dev:
        return False
    real = os.path.realpath(path)
    if not real.startswith("/dev/"):
        return False
    try:
        kept = dev_submounts()
    except SvirtError:
        kept = ()
    if any(real == m or real.startswith(m + "/") for m in kept):
        return False  # /dev/pts, /dev/shm, ...: moved into the private /dev, not copied
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _copy_overrides(ops: Sequence[LabelOp]) -> dict[str, tuple[str | None, str | None]]:
    """realpath -> (SELinux label, DAC ids) the namespace copy must carry."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for op in ops:
        real = os.path.realpath(op.path)
        label, ids = out.get(real, (None, None))
        if op.driver == "selinux":
            label = op.value
        elif op.driver == "dac":
            ids = op.value
        out[real] = (label, ids)
    return out


def _apply_overrides(plan: DevPlan, overrides: dict[str, tuple[str | None, str | None]]) -> DevPlan:
    nodes = []
    for node in plan.nodes:
        label, ids = overrides.get(node.path, (None, None))
        if label is not None:
            node = replace(node, label=label)
        if ids is not None:
            uid, gid = parse_ids(ids)
            node = replace(node, uid=Uid(uid), gid=Gid(gid))
        nodes.append(node)
    return replace(plan, nodes=tuple(nodes))


def _label_copies(overrides: dict[str, tuple[str | None, str | None]]) -> None:
    """In the VM's namespace (hotplug): give the copies their labels and owners."""
    for path, (label, ids) in overrides.items():
        if label is not None:
            host_selinux.setfilecon(path, label, follow=False)
        if ids is not None:
            uid, gid = parse_ids(ids)
            os.chown(path, uid, gid, follow_symlinks=False)


def _copies_of(private_dev: bool) -> Callable[[str], bool]:
    return lambda path: in_private_dev(private_dev, path)


def qemu_alive(rec: DomainRecord) -> bool:
    """The record's QEMU still runs: the same pid with the same start time (a reused
    pid is another process). A record written before start times were kept falls back
    to QEMU's ``-name`` argument, escaped as it was given."""
    if rec.pid is None:
        return False
    if rec.pid_start is not None:
        return pid_alive(rec.pid, rec.pid_start)
    if not pid_alive(rec.pid):  # a zombie has exited already
        return False
    try:
        with open(f"/proc/{rec.pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    marker = f"guest={qemu_escape(rec.domain.name)},".encode()
    return any(a.startswith(marker) for a in argv)


# The records `reconcile` restores once their monitor and QEMU are gone (a dead
# `starting` claim is forgotten by SecurityManager.recover instead: nothing was labelled).
RECONCILED = frozenset({DomainState.LAUNCHING, DomainState.RUNNING, DomainState.STOPPING})


def reconcile(cfg: Config, mgr: SecurityManager | None = None) -> list[str]:
    """Restore the labels of domains whose monitor and QEMU are both gone. Returns the
    names reconciled. Crashed transactions are rolled back first (a monitor that died
    while labelling left a claim the rollback already covers: it is only forgotten)."""
    mgr = mgr or SecurityManager(cfg)
    mgr.recover()
    done = []
    for rec in list(mgr.store.records()):
        if rec.state not in RECONCILED or rec.owner is None:
            continue
        if rec.owner_alive() or qemu_alive(rec):
            continue
        name = rec.domain.name
        # A QEMU is recorded (pid and start time) before it may exec (spawn's
        # on_forked): with no pid recorded, no QEMU of this record ever ran.
        if not mgr.store.take(name, (rec.state,), rec.owner, DomainState.STOPPING):
            continue  # another svirt process is already on it
        log.warning("domain %s: its monitor and QEMU are gone; restoring its labels", name)
        try:
            mgr.restore_and_release(rec.domain, exclude=_copies_of(rec.private_dev))
        except SvirtError as exc:
            log.warning("%s", exc)
            continue  # left restore-failed with its pending paths: not reported as restored
        done.append(name)
        with contextlib.suppress(FileNotFoundError):
            runtime_paths(cfg, name)[0].unlink()
    return done


def _identity(mgr: SecurityManager, domain: Domain) -> Identity:
    dac = mgr.drivers["dac"]
    assert isinstance(dac, DACDriver)
    uid, gid = dac.process_ids(domain)
    identity = resolve_identity(f"+{uid}", f"+{gid}")
    if mgr.identities is not None and uid != dac.uid:
        # A per-VM identity keeps the configured user's supplementary groups (e.g.
        # kvm, for /dev/kvm), never its primary group: files given to the shared
        # identity's group must stay out of reach.
        shared = resolve_identity(mgr.cfg.user, mgr.cfg.group)
        extra = tuple(g for g in shared.groups if g != shared.gid)
        identity = replace(identity, groups=tuple(dict.fromkeys((*identity.groups, *extra))))
    return identity


def _report(fd: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    with contextlib.suppress(OSError):
        os.write(fd, data)
        os.close(fd)


def _monitor(cfg: Config, domain: Domain, report_fd: int) -> None:
    """The per-VM monitor (runs in the detached grandchild; never returns)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    qmp_path, log_path = runtime_paths(cfg, domain.name)
    qmp_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The monitor's own log: 0600, and removed when the monitor ends cleanly (issue 11:
    # they were never removed); kept after a failure, for the administrator.
    monitor_log = log_path.with_suffix(".monitor.log")
    with contextlib.suppress(OSError):
        os.close(os.open(monitor_log, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    logging.basicConfig(
        filename=str(monitor_log),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    started = time.monotonic()
    mgr: SecurityManager | None = None
    live: Domain | None = None
    qemu_pid: int | None = None
    labelled = claimed = False
    private_dev = "mount" in cfg.namespaces
    try:
        mgr = SecurityManager(cfg)
        reconcile(cfg, mgr)
        mgr.store.claim(domain.name, DomainState.STARTING, os.getpid(), private_dev=private_dev)
        claimed = True
        live = mgr.gen_labels(domain)
        live = replace(live, id=mgr.store.next_id())
        mgr.store.write(live, DomainState.STARTING, owner=os.getpid())
        # A failed labelling transaction has already put every file back as it was;
        # only after it succeeded is there something of ours to restore.
        ops = mgr.set_ops(live)
        copies = [op for op in ops if in_private_dev(private_dev, op.path)]
        left = [rep.from_left(lf) for lf in mgr.left(live, Action.SET)]
        labelling = mgr.transaction().run(
            live.name,
            [op for op in ops if op not in copies],
            on_commit=lambda _r: mgr.store.set_state(
                live.name, DomainState.LAUNCHING, owner=os.getpid()
            ),
        )
        labelled = True
        mgr.record_shared(live)  # fleet ledger: who holds the shared files (issue 15)
        # Pre-flight (issue 7): ask the policy whether QEMU can use every resource with
        # the label it now carries; fails on an enforcing host, else warns.
        # QEMU opens the copies in its private /dev, with the labels they will carry;
        # the QEMU identity's own access (DAC) is decided by the kernel (issue 10).
        identity = _identity(mgr, live)
        preflight_warnings = check_before_start(
            cfg,
            live,
            mgr.selinux,
            labels={op.path: op.value for op in copies if op.driver == "selinux" and op.value},
            identity=identity,
        )
        dev_plan = None
        if private_dev:
            dev_plan = plan_private_dev(domain_dev_paths(live, cfg.cgroup_device_acl))
            dev_plan = _apply_overrides(dev_plan, _copy_overrides(copies))
        sl = live.seclabel("selinux")
        sock = bind_monitor_socket(qmp_path, context=sl.label if sl is not None else None)
        try:
            cmd = build_command(
                live,
                qmp_fd=sock.fileno(),
                binary=cfg.qemu_binary,
                kvm_available=kvm_usable(identity),
            )
            sl = live.seclabel("selinux")
            log_start = _log_size(log_path)
            spawned = spawn(
                cmd.argv,
                log_path=log_path,
                identity=identity,
                dev_plan=dev_plan,
                exec_context=sl.label if sl is not None else None,
                pass_fds=(sock.fileno(),),
                # Recorded before it may exec: never an unrecorded QEMU.
                on_forked=lambda pid: mgr.store.set_state(
                    live.name, DomainState.LAUNCHING, pid=pid, owner=os.getpid()
                ),
            )
        finally:
            sock.close()
        qemu_pid = spawned.pid
        mgr.store.set_state(live.name, DomainState.RUNNING, pid=qemu_pid, owner=os.getpid())
        mgr.store.write(live, DomainState.RUNNING, pid=qemu_pid, owner=os.getpid())
        try:
            with QMPClient.connect(
                qmp_path, timeout=_READY_TIMEOUT, pid=qemu_pid, vm_label=_vm_label(live)
            ) as qmp:
                qmp.query_status()
        except SvirtError as exc:
            if wait_exit(qemu_pid, 1.0) is None:
                raise
            qemu_pid = None
            # libvirt's text, with everything QEMU said since this start: its error is
            # often two lines ('Failed to get "write" lock', then 'Is another process
            # using the image ...?'), and the first one explains the second.
            raise LaunchError(
                "internal error: process exited while connecting to monitor: "
                + (_qemu_error(log_path, log_start) or str(exc))
            ) from None
        sl = live.seclabel("selinux")
        _report(
            report_fd,
            {
                "ok": True,
                "pid": qemu_pid,
                "label": sl.label if sl else None,
                "imagelabel": sl.imagelabel if sl else None,
                "enforced": spawned.exec_context_enforced,
                "notes": list(cmd.notes),
                "seconds": time.monotonic() - started,
                "warnings": preflight_warnings,
                "outcomes": [o.to_json() for o in mgr.ordered(live, [*left, *labelling.report])],
            },
        )
    except BaseException as exc:
        message = str(exc) if isinstance(exc, SvirtError) else f"{type(exc).__name__}: {exc}"
        log.error("start failed: %s", message)
        if qemu_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(qemu_pid, signal.SIGKILL)
            wait_exit(qemu_pid)
        if mgr is not None and claimed:
            try:
                if labelled and live is not None:
                    # launching/running -> stopping first: the transition table lets only
                    # a stopping record end in restore-failed when a path cannot be put back
                    mgr.store.set_state(live.name, DomainState.STOPPING, owner=os.getpid())
                    mgr.restore_and_release(live, exclude=_copies_of(private_dev))
                else:  # a failed labelling transaction already put the files back
                    if live is not None:
                        mgr.release_labels(live)
                    mgr.store.remove(domain.name)
            except SvirtError as cleanup:
                message += f" (and restoring labels failed: {cleanup})"
        with contextlib.suppress(FileNotFoundError):
            qmp_path.unlink()
        _report(report_fd, {"ok": False, "error": message})
        os._exit(1)
    assert mgr is not None and live is not None and qemu_pid is not None
    code = wait_exit(qemu_pid)
    log.info("QEMU %d exited with %s; restoring labels", qemu_pid, code)
    current = live
    try:
        # "stopping" first: from then on no hotplug can change the disk list, so the one
        # read next is the one to restore.
        mgr.store.set_state(live.name, DomainState.STOPPING, owner=os.getpid())
        rec = mgr.store.read(live.name)
        current = rec.domain if rec is not None else live
        mgr.store.sync_views()
        mgr.restore_and_release(current, exclude=_copies_of(private_dev))
    except (sqlite3.Error, OSError, StateError) as exc:
        # The state directory cannot be written (a full disk): the files are restored
        # all the same, then the record is finished once it can be written.
        log.error("the state database cannot be written (%s): restoring without it", exc)
        with contextlib.suppress(sqlite3.Error, OSError, SvirtError):
            rec = mgr.store.read(live.name)  # reading still works on a full disk
            current = rec.domain if rec is not None else current
        _restore_without_state(mgr, current, private_dev)
        os._exit(1)
    except SvirtError as exc:
        log.error("%s", exc)
        os._exit(1)
    finally:
        with contextlib.suppress(FileNotFoundError):
            qmp_path.unlink()
    with contextlib.suppress(OSError):
        monitor_log.unlink()
    os._exit(0)


def _log_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


_QEMU_ERROR_MAX = 8192  # the tail kept of a very chatty failed start


def _restore_without_state(mgr: SecurityManager, domain: Domain, private_dev: bool) -> None:
    """Restore a stopped VM's files without the journal or the database (they cannot be
    written), then keep trying to release its levels and drop its record. The monitor
    stays alive (the record's owner) until it can: nobody else restores the files a
    second time meanwhile."""
    ops = [op for op in mgr.restore_ops(domain) if not in_private_dev(private_dev, op.path)]
    tx = Transaction(
        mgr.drivers,
        None,
        remember=mgr.cfg.remember_owner,
        protected=(*mgr.cfg.protected_paths, str(mgr.cfg.state_dir)),
        allow_hard_links=mgr.cfg.allow_hard_links,
        # reading works on a full disk: originals libvirt erased are still put back
        kept=KeptOriginals(mgr.conn),
    )
    result = tx.run(domain.name, ops, best_effort=True)
    for op, exc in result.errors:
        log.error("%s: %s", op.path, exc)
    log.warning("domain %s: files restored without the state database", domain.name)
    # What this restore did, written with the record's end (else a stop would read the
    # report an earlier run of the same name left, as if it were this one's).
    try:
        left = [
            rep.from_left(lf)
            for lf in mgr.left(domain, Action.RESTORE)
            if not in_private_dev(private_dev, lf.path)
        ]
        outcomes = mgr.ordered(domain, [*left, *result.report])
    except (SvirtError, OSError) as exc:  # never in the way of finishing the record
        log.error("domain %s: the rules' outcomes are not reported: %s", domain.name, exc)
        outcomes = list(result.report)
    report = [o.to_json() for o in outcomes]
    delay = 0.5
    while True:
        try:
            with write_transaction(mgr.conn):
                # This process's journal entries of the failed restore hold the labelled
                # state as "before": closed with the record, or the next recovery would
                # put the VM's labels back on files whose levels are released.
                for open_tx in list(mgr.journal.open_transactions()):
                    if open_tx.pid == os.getpid() and open_tx.domain == domain.name:
                        mgr.journal.finish(open_tx.id, "committed")  # done by this fallback
                mgr._release_levels(domain.name)
                OutcomeReports(mgr.conn).put(domain.name, report)
                mgr.store.drop(domain.name, owner=os.getpid())
            mgr.store.remove_view(domain.name)
            log.info("domain %s: record finished", domain.name)
            return
        except (sqlite3.Error, OSError, SvirtError) as exc:
            log.info("domain %s: the record cannot be finished yet (%s)", domain.name, exc)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _qemu_error(path: Path, start: int) -> str:
    """Everything QEMU wrote to its log since ``start``, on one line."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(start, size - _QEMU_ERROR_MAX))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def _exec_monitor(cfg: Config, domain: Domain, report_fd: int) -> None:
    """Replace this (forked) process with a new Python running :func:`_monitor`: no
    sqlite state of the parent survives an exec. The configuration and the domain go
    through a memfd, as a pickle (this process hands them to its own program)."""
    data = os.memfd_create("svirt-monitor", 0)  # no CLOEXEC: the new program reads it
    payload = pickle.dumps((cfg, domain))
    view = memoryview(payload)
    while view:
        view = view[os.write(data, view) :]
    os.lseek(data, 0, os.SEEK_SET)
    os.set_inheritable(report_fd, True)
    root = str(Path(__file__).resolve().parents[2])  # the directory holding svirt/
    os.execv(
        sys.executable,
        [sys.executable, "-I", "-c", _MONITOR_MAIN, root, str(data), str(report_fd)],
    )


# The new program of _exec_monitor: import svirt from where this process did.
_MONITOR_MAIN = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from svirt.launch.lifecycle import _monitor_main; "
    "_monitor_main(int(sys.argv[2]), int(sys.argv[3]))"
)


def _monitor_main(data_fd: int, report_fd: int) -> None:  # pragma: no cover - the monitor
    with os.fdopen(data_fd, "rb") as fh:
        cfg, domain = pickle.load(fh)
    _monitor(cfg, domain, report_fd)


def start_domain(cfg: Config, domain: Domain) -> StartResult:
    """Start a domain under a detached monitor; returns once QMP answers."""
    # The record with its start times (the view has none): a pid reused by another
    # process since is not the record's monitor or QEMU (issue 14).
    conn = connect(cfg.state_dir)
    try:
        rec = DomainStore(cfg.state_dir, conn).read(domain.name)
    finally:
        conn.close()  # never carried across the fork below
    if rec is not None and (rec.owner_alive() or qemu_alive(rec)):
        raise LaunchError(PREFIX_OPERATION_INVALID + f"domain '{domain.name}' is already active")
    # A monitor forked from a process holding state-database connections would inherit
    # sqlite's in-memory lock state without the locks: it then runs in a fresh
    # interpreter instead (docs/design.md, "a monitor forked with open connections").
    # connections_open() collects the unreachable ones first.
    fresh = connections_open()
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        # Never finalize the caller's objects (its connections) in the monitor.
        gc.freeze()
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            if fresh:
                _exec_monitor(cfg, domain, w)
            _monitor(cfg, domain, w)
        finally:
            os._exit(1)
    os.close(w)
    os.waitpid(pid, 0)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    try:
        payload = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        payload = {}
    if not payload.get("ok"):
        raise LaunchError(payload.get("error") or "the monitor died before reporting")
    return StartResult(
        domain.name,
        int(payload["pid"]),
        payload.get("label"),
        payload.get("imagelabel"),
        bool(payload.get("enforced")),
        tuple(payload.get("notes") or ()),
        float(payload.get("seconds") or 0.0),
        tuple(payload.get("warnings") or ()),
        tuple(rep.ResourceOutcome.from_json(o) for o in payload.get("outcomes") or ()),
    )


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.01)
    return not pid_alive(pid)


def stop_domain(cfg: Config, name: str, *, force: bool = False, timeout: float = 10.0) -> str:
    """:func:`stop`, returning only how QEMU was stopped."""
    return stop(cfg, name, force=force, timeout=timeout).how


def stop(
    cfg: Config,
    name: str,
    *,
    force: bool = False,
    timeout: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> StopResult:
    """Stop a running domain: QMP ``system_powerdown`` (unless ``force``), then ``quit``,
    then SIGTERM, then SIGKILL; then wait for the monitor to restore every label.
    ``progress`` is told what is being waited for, how long, and each escalation.
    Returns how QEMU was stopped and what the restore did to each resource."""
    say = progress or (lambda _text: None)
    mgr = SecurityManager(cfg)
    reconcile(cfg, mgr)
    rec = mgr.store.read(name)
    if rec is None or not rec.state.active:
        raise LaunchError(PREFIX_OPERATION_INVALID + f"domain '{name}' is not running")
    deadline = time.monotonic() + _READY_TIMEOUT
    while (
        rec is not None
        and rec.state in (DomainState.STARTING, DomainState.LAUNCHING)
        and rec.owner_alive()
    ):
        if time.monotonic() > deadline:
            raise LaunchError(
                PREFIX_OPERATION_INVALID + f"domain '{name}' is still starting; try again"
            )
        time.sleep(0.02)
        rec = mgr.store.read(name)
    if rec is None:
        return StopResult(name, "already stopped", *_taken(mgr, name))
    how = "already stopped"
    qmp_path, _ = runtime_paths(cfg, name)
    if qemu_alive(rec):
        assert rec.pid is not None
        how = "killed"
        try:
            with QMPClient.connect(
                qmp_path, timeout=2.0, pid=rec.pid, vm_label=_vm_label(rec.domain)
            ) as qmp:
                if not force:
                    qmp.system_powerdown()
                    say(
                        f"waiting up to {timeout:g} s for the guest of '{name}' to power down "
                        f"(ACPI power button); 'svirt stop --force {name}' quits QEMU at once"
                    )
                    if _wait_gone(rec.pid, timeout):
                        how = "powered down"
                    else:
                        say(
                            f"the guest did not power down within {timeout:g} s: "
                            "asking QEMU to quit (QMP quit)"
                        )
                if how != "powered down":
                    qmp.quit()
                    how = "quit"
        except SvirtError as exc:
            log.info("QMP: %s", exc)
            if how != "quit" and not _wait_gone(rec.pid, 0.0):
                say(f"QEMU's monitor socket does not answer ({exc})")
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            waited = 3.0 if how == "quit" else 0.0
            if _wait_gone(rec.pid, waited):
                break
            signame = "SIGTERM" if sig == signal.SIGTERM else "SIGKILL"
            after = {"quit": "3 s after QMP quit", "terminated": "3 s after SIGTERM"}.get(how)
            say(
                f"QEMU (pid {rec.pid}) is still running"
                + (f" {after}" if after else "")
                + f": sending {signame}"
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, sig)
            how = "terminated" if sig == signal.SIGTERM else "killed"
            if _wait_gone(rec.pid, grace):
                break
    # The monitor restores the labels when it sees QEMU exit: wait for it. Only if the
    # monitor is gone does this process restore, after taking the domain over.
    deadline = time.monotonic() + 60.0
    while rec is not None and rec.owner_alive() and rec.state != DomainState.RESTORE_FAILED:
        if time.monotonic() > deadline:
            raise LaunchError(f"domain '{name}': its monitor has not finished restoring")
        time.sleep(0.01)
        rec = mgr.store.read(name)
    if rec is not None:
        if rec.state == DomainState.RESTORE_FAILED:
            raise LaunchError(
                f"domain '{name}' stopped, but some labels could not be restored: "
                f"{', '.join(rec.pending)}; run 'svirt restore' after fixing the cause"
            )
        assert rec.owner is not None
        if mgr.store.take(name, (rec.state,), rec.owner, DomainState.STOPPING):
            mgr.restore_and_release(rec.domain, exclude=_copies_of(rec.private_dev))
    return StopResult(name, how, *_taken(mgr, name))


def _taken(mgr: SecurityManager, name: str) -> tuple[tuple[rep.ResourceOutcome, ...], bool]:
    """The outcomes the last restore of ``name`` recorded (by its monitor, a reconcile,
    or this process), removed from the state database; and whether there was a report."""
    body = OutcomeReports(mgr.conn).take(name)
    outs = tuple(rep.ResourceOutcome.from_json(o) for o in body or () if isinstance(o, dict))
    return outs, body is not None


def erased_memory(cfg: Config, name: str) -> list[str]:
    """Warnings for the originals of a domain whose remembered xattrs someone else
    erased (libvirt's defect); the restore puts them back from svirt's own copy."""
    mgr = SecurityManager(cfg)
    return [
        rem.erased_warning(k.path, k.driver, k.domain, k.value)
        for k in KeptOriginals(mgr.conn).erased(name)
    ]


def shared_media_notes(cfg: Config, name: str) -> list[str]:
    """What stop will leave as the VM had it: read-only and shareable media (libvirt's
    rule, which svirt follows so that a libvirt domain using the medium keeps it), from
    the drivers' own rules and the files as they are now."""
    mgr = SecurityManager(cfg)
    rec = mgr.store.read(name)
    if rec is None:
        return []
    left = [rep.from_left(lf) for lf in mgr.left(rec.domain, Action.RESTORE)]
    return rep.shared_notes(left)


def _running(mgr: SecurityManager, name: str) -> DomainRecord:
    rec = mgr.store.read(name)
    if rec is None or rec.state != DomainState.RUNNING or not qemu_alive(rec):
        raise LaunchError(PREFIX_OPERATION_INVALID + f"domain '{name}' is not running")
    return rec


def attach_disk(cfg: Config, name: str, disk: Disk) -> Domain:
    """Hotplug: the node in the VM's namespace, labels, then QEMU over QMP."""
    return attach(cfg, name, disk).domain


def attach(cfg: Config, name: str, disk: Disk) -> HotplugResult:
    """:func:`attach_disk`, with what happened to each of the disk's files."""
    mgr = SecurityManager(cfg)
    rec = _running(mgr, name)
    domain = rec.domain
    if any(d.target == disk.target for d in domain.disks):
        raise LaunchError(PREFIX_OPERATION_INVALID + f"target {disk.target} already exists")
    assert rec.pid is not None
    new = replace(domain, disks=(*domain.disks, disk))
    resources = list(disk_resources(disk))
    all_ops = mgr.set_ops(new, resources)
    copies = [op for op in all_ops if in_private_dev(rec.private_dev, op.path)]
    ops = [op for op in all_ops if op not in copies]
    created: tuple[str, ...] = ()
    if rec.private_dev:
        created = populate_in_namespace(rec.pid, [r.path for r in resources if r.path])
        if copies:
            overrides = _copy_overrides(copies)
            run_in_namespace(rec.pid, lambda: _label_copies(overrides))
    # The disk joins the record in the commit of its labels: a crash after it leaves a
    # disk the monitor restores at stop; once the monitor is stopping, nothing joins.
    left = [rep.from_left(lf) for lf in mgr.left(new, Action.SET, resources)]
    labelling = mgr.transaction().run(
        name, ops, on_commit=lambda _r: mgr.store.set_domain_while(new, DomainState.RUNNING)
    )
    qmp_path, _ = runtime_paths(cfg, name)
    added: list[str] = []
    try:
        with QMPClient.connect(
            qmp_path, timeout=5.0, pid=rec.pid, vm_label=_vm_label(rec.domain)
        ) as qmp:
            for node in disk_blockdevs(disk):
                qmp.blockdev_add(node)
                added.append(str(node["node-name"]))
            qmp.device_add(disk_device(disk, domain.os.machine or "pc"))
    except SvirtError:
        with (
            contextlib.suppress(SvirtError),
            QMPClient.connect(qmp_path, timeout=5.0, vm_label=_vm_label(rec.domain)) as qmp,
        ):
            for node_name in reversed(added):
                qmp.blockdev_del(node_name)
        mgr.transaction().run(
            name,
            [
                op
                for op in mgr.restore_ops(new, resources)
                if not in_private_dev(rec.private_dev, op.path)
            ],
            best_effort=True,
            on_commit=lambda _r: mgr.store.set_domain_while(domain, DomainState.RUNNING),
        )
        if created:
            remove_from_namespace(rec.pid, created)
        raise
    mgr.store.sync_views()
    return HotplugResult(new, tuple(mgr.ordered(new, [*left, *labelling.report])))


def detach_disk(cfg: Config, name: str, target: str) -> Domain:
    """Hot-unplug: QEMU lets go of the disk, then its labels are restored."""
    return detach(cfg, name, target).domain


def detach(cfg: Config, name: str, target: str) -> HotplugResult:
    """:func:`detach_disk`, with what the restore did to each of the disk's files."""
    mgr = SecurityManager(cfg)
    rec = _running(mgr, name)
    domain = rec.domain
    disk = next((d for d in domain.disks if d.target == target), None)
    if disk is None:
        raise LaunchError(f"disk {target} not found")
    assert rec.pid is not None
    qmp_path, _ = runtime_paths(cfg, name)
    with QMPClient.connect(
        qmp_path, timeout=5.0, pid=rec.pid, vm_label=_vm_label(rec.domain)
    ) as qmp:
        qmp.device_del(disk_device_id(disk))
        # Bottom layer first in the list: delete from the top (format before storage).
        for node in reversed(disk_blockdevs(disk)):
            qmp.blockdev_del(str(node["node-name"]))
    new = replace(domain, disks=tuple(d for d in domain.disks if d.target != target))
    # The disk leaves the record in the commit of its restore (if the monitor is
    # already stopping the VM, this restore is undone and the monitor does it).
    restore = mgr.restore_ops(domain, list(disk_resources(disk)))
    left = [
        rep.from_left(lf)
        for lf in mgr.left(domain, Action.RESTORE, list(disk_resources(disk)))
        if not in_private_dev(rec.private_dev, lf.path)
    ]
    result = mgr.transaction().run(
        name,
        [op for op in restore if not in_private_dev(rec.private_dev, op.path)],
        best_effort=True,
        on_commit=lambda _r: mgr.store.set_domain_while(new, DomainState.RUNNING),
    )
    mgr.store.sync_views()
    if result.errors:
        raise result.errors[0][1]
    # libvirt leaves the disk's /dev node in the namespace: it may be another disk's
    # backing layer.
    return HotplugResult(new, tuple(mgr.ordered(domain, [*left, *result.report])))
