"""Host security policy: which drivers are stacked, and checks of a domain against them.

libvirt wraps the configured drivers in a stack: every driver named in
``security_driver`` (or the first that probes as enabled: selinux, then none), then
``dac`` last for the privileged daemon (libvirt-security-spec §1, §9.1). svirt always
runs privileged, so ``dac`` is always stacked.

Unlike libvirt, naming ``selinux`` explicitly turns it on where the kernel has SELinux
off: labels are written for real and the process label is recorded, not enforced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from svirt.conf import Config
from svirt.context import MLSRange, SecurityContext
from svirt.domain.model import DeviceSeclabel, Domain, Seclabel, SeclabelType
from svirt.domain.parse import parse_domain_file
from svirt.domain.resources import Resource, domain_resources
from svirt.errors import (
    PREFIX_CONFIG_UNSUPPORTED,
    PREFIX_INTERNAL,
    PREFIX_INVALID_ARG,
    PREFIX_OPERATION_INVALID,
    PREFIX_XML_ERROR,
    ContextError,
    SecurityError,
    StateError,
    SvirtError,
    XMLError,
)
from svirt.host import selinux as host_selinux
from svirt.host.procs import pid_alive
from svirt.security import report as rep
from svirt.security.dac import DACDriver
from svirt.security.driver import Action, LabelOp, Left, Outcome, Preview, SecurityDriver
from svirt.security.identity import IdentityLedger, vm_identity_enabled
from svirt.security.ledger import open_ledger
from svirt.security.nop import NopDriver
from svirt.security.remember import boot_time, read_remembered
from svirt.security.selinux import SELinuxDriver
from svirt.security.transaction import RecoveryAction, Transaction, TransactionResult, recover
from svirt.state.db import connect, write_transaction
from svirt.state.domains import DomainState, DomainStore
from svirt.state.journal import Journal
from svirt.state.originals import KeptOriginals
from svirt.state.reports import OutcomeReports

__all__ = [
    "LabelResult",
    "Plan",
    "PlannedOp",
    "RestoreReport",
    "SecurityManager",
    "check_domain",
    "default_model",
    "primary_drivers",
    "restore_target",
    "stacked_models",
    "xml_differences",
]

log = logging.getLogger(__name__)


def primary_drivers(cfg: Config) -> tuple[str, ...]:
    """The non-DAC drivers, in stack order."""
    if cfg.security_driver is not None and len(cfg.security_driver) > 0:
        return cfg.security_driver
    return ("selinux",) if host_selinux.is_enabled() else ("none",)


def stacked_models(cfg: Config) -> tuple[str, ...]:
    """Every nested driver's model: the primary drivers, then ``dac``."""
    return (*primary_drivers(cfg), "dac")


def default_model(cfg: Config) -> str:
    """The primary driver's model: the default for a model-less ``<seclabel>``."""
    return primary_drivers(cfg)[0]


def _check_dac_label(label: str, what: str) -> None:
    user, sep, group = label.partition(":")
    if not sep or not user or not group:
        raise SecurityError(PREFIX_INVALID_ARG + f"Failed to parse uid and gid from '{label}'")
    for part in (user, group):
        digits = part[1:] if part.startswith("+") else part
        if part.startswith("+") and not digits.isdigit():
            raise SecurityError(
                PREFIX_INVALID_ARG + f"Failed to parse uid and gid from '{label}' ({what})"
            )


def _check_selinux_label(label: str) -> None:
    try:
        SecurityContext.parse(label)
    except ContextError as exc:
        raise XMLError(
            PREFIX_XML_ERROR + f"Invalid security label {label}: {exc.message}"
        ) from None


def _check_device_labels(
    labels: tuple[DeviceSeclabel, ...], what: str, available: Callable[[str | None], None] | None
) -> None:
    for dsl in labels:
        if available is not None:
            available(dsl.model)
        if dsl.label is not None and dsl.model == "selinux":
            _check_selinux_label(dsl.label)
        elif dsl.label is not None and dsl.model == "dac":
            _check_dac_label(dsl.label, what)


def check_domain(domain: Domain, cfg: Config) -> None:
    """What libvirt checks before start: models available (``CheckAllLabel``), confinement
    policy, and label syntax (``Verify``). Raises the libvirt error on the first problem."""
    # A host configuration error, reported before anything about the domain.
    if cfg.security_require_confined and "none" in primary_drivers(cfg):
        raise SecurityError(
            PREFIX_CONFIG_UNSUPPORTED + 'Security driver "none" cannot create confined guests'
        )
    models = stacked_models(cfg)

    def available(model: str | None) -> None:
        if model is not None and model != "none" and model not in models:
            raise SecurityError(
                PREFIX_CONFIG_UNSUPPORTED + f"Security driver model '{model}' is not available"
            )

    for sl in domain.seclabels:
        available(sl.model)
        if sl.type is SeclabelType.NONE and cfg.security_require_confined:
            raise SecurityError(
                PREFIX_CONFIG_UNSUPPORTED + "Unconfined guests are not allowed on this host"
            )
        for text in (sl.label, sl.imagelabel, sl.baselabel):
            if text is None:
                continue
            if sl.model == "selinux":
                _check_selinux_label(text)
            elif sl.model == "dac":
                _check_dac_label(text, "domain seclabel")
    for disk in domain.disks:
        if disk.source is None:
            continue
        for src in disk.source.chain():
            # Only the top source's models are checked for availability, as libvirt does.
            _check_device_labels(
                src.seclabels, f"disk {disk.target}", available if src is disk.source else None
            )
    for ch in domain.chardevs:
        _check_device_labels(ch.seclabels, ch.kind.value, available)


@dataclass(frozen=True, slots=True)
class PlannedOp:
    """One operation of a plan, with what the file looks like now (for ``--dry-run``)."""

    op: LabelOp
    current: str | None
    remembered: str | None  # the remembered original, if any
    # issue 14: what applying it would do now, and what the restore will do
    preview: Preview | None = None
    undo: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """``svirt label --dry-run``: the live definition, every operation with what it
    would do, and what the drivers' rules leave alone."""

    domain: Domain
    ops: tuple[PlannedOp, ...]
    left: tuple[Left, ...]


@dataclass(frozen=True, slots=True)
class LabelResult:
    """``svirt label``: the live definition and what happened to each resource."""

    domain: Domain
    outcomes: tuple[rep.ResourceOutcome, ...]

    @property
    def imagelabel_status(self) -> str:
        sl = self.domain.seclabel("selinux")
        return rep.image_label_status(sl.imagelabel if sl else None, self.outcomes)


class SecurityManager:
    """The stack of drivers for this host, and the domain-level operations on it.

    Drivers: the primary ones of :func:`primary_drivers`, in order (DAC joins the stack
    in its own module). Every mutating operation first reconciles what a crashed svirt
    process left behind, so the journal is rolled back before anyone builds on it.
    """

    def __init__(self, cfg: Config, *, conn: sqlite3.Connection | None = None) -> None:
        self.cfg = cfg
        self.conn = conn if conn is not None else connect(cfg.state_dir)
        self.journal = Journal(self.conn)
        self.store = DomainStore(cfg.state_dir, self.conn)
        self.drivers: dict[str, SecurityDriver] = {}
        for name in primary_drivers(cfg):
            if name == "selinux":
                drv = SELinuxDriver(cfg)
                drv.bind_ledger(open_ledger(cfg, self.conn, drv.sens, drv.cat_min, drv.cat_max))
                self.drivers[name] = drv
                _warn_unenforced_once(self.conn)
            elif name == "none":
                self.drivers[name] = NopDriver()
            else:
                raise SecurityError(PREFIX_INTERNAL + f"Security driver {name} not found")
        # DAC is always stacked last: svirt runs privileged, like libvirt's system daemon.
        # With per-VM identities (issue 11) each VM's QEMU gets its own uid:gid.
        self.identities = (
            IdentityLedger(self.conn, *cfg.vm_id_range) if vm_identity_enabled(cfg) else None
        )
        self.drivers["dac"] = DACDriver(cfg, self.identities)

    @property
    def selinux(self) -> SELinuxDriver | None:
        drv = self.drivers.get("selinux")
        return drv if isinstance(drv, SELinuxDriver) else None

    # --- labels -------------------------------------------------------------------------

    def gen_labels(self, domain: Domain) -> Domain:
        """Manager-level GenLabel (spec §2.3): implicit labels, confinement policy, then
        each driver's generation. Labels a live XML already carries are adopted."""
        self.sync_libvirt_levels()
        labels = list(domain.seclabels)
        done: list[SecurityDriver] = []
        try:
            for drv in self.drivers.values():
                if drv.name == "none":
                    continue
                idx = next((i for i, s in enumerate(labels) if s.model == drv.name), None)
                if idx is None:
                    if not self.cfg.security_default_confined:
                        continue
                    labels.append(Seclabel(SeclabelType.DYNAMIC, drv.name, True, implicit=True))
                    idx = len(labels) - 1
                sl = labels[idx]
                if sl.type is SeclabelType.NONE and self.cfg.security_require_confined:
                    raise SecurityError(
                        PREFIX_CONFIG_UNSUPPORTED + "Unconfined guests are not allowed on this host"
                    )
                if sl.type is SeclabelType.DYNAMIC and sl.label is not None:
                    labels[idx] = drv.adopt_label(domain, sl)
                else:
                    labels[idx] = drv.gen_label(domain, sl)
                done.append(drv)
        except BaseException:
            for drv in done:
                drv.release_label(domain, Seclabel())
            raise
        return replace(domain, seclabels=tuple(labels))

    def sync_libvirt_levels(self) -> None:
        """Record the MCS levels of libvirt's running domains (its status XML under
        ``libvirt_run_dir``) in the ledger, as ``libvirt:<name>``, so svirt never hands
        out a pair a libvirt VM on the same host already uses; forget those gone."""
        drv = self.selinux
        run_dir = self.cfg.libvirt_run_dir
        if drv is None:
            return
        seen: set[str] = set()
        if run_dir.is_dir():
            for path in sorted(run_dir.glob("*.xml")):
                try:
                    dom = parse_domain_file(path, inactive=False)
                except SvirtError as exc:
                    log.debug("skipping %s: %s", path, exc)
                    continue
                sl = dom.seclabel("selinux")
                if sl is None or sl.label is None or sl.label.count(":") < 3:
                    continue
                owner = f"libvirt:{dom.name}"
                seen.add(owner)
                try:
                    drv.ledger.reserve(
                        owner,
                        sl.label.split(":", 3)[3],
                        label=sl.label,
                        static=sl.type is SeclabelType.STATIC,
                    )
                except SecurityError as exc:
                    log.warning("libvirt domain %s: %s", dom.name, exc)
        for owner, _pid in drv.ledger.holders():
            if owner.startswith("libvirt:") and owner not in seen:
                drv.ledger.release(owner)

    def release_labels(self, domain: Domain) -> Domain:
        labels = []
        for sl in domain.seclabels:
            drv = self.drivers.get(sl.model or "")
            if drv is None:
                labels.append(sl)
                continue
            new = drv.release_label(domain, sl)
            if not sl.implicit:
                labels.append(new)
        return replace(domain, seclabels=tuple(labels))

    # --- operations ---------------------------------------------------------------------

    def set_ops(self, domain: Domain, resources: Sequence[Resource] | None = None) -> list[LabelOp]:
        res = list(domain_resources(domain)) if resources is None else list(resources)
        return [op for drv in self.drivers.values() for op in drv.set_ops(domain, res)]

    def restore_ops(
        self, domain: Domain, resources: Sequence[Resource] | None = None
    ) -> list[LabelOp]:
        res = list(domain_resources(domain)) if resources is None else list(resources)
        return [op for drv in self.drivers.values() for op in drv.restore_ops(domain, res)]

    def transaction(self, step_hook: Callable[[int], None] | None = None) -> Transaction:
        return Transaction(
            self.drivers,
            self.journal,
            remember=self.cfg.remember_owner,
            # The state directory is never a disk (its database, records, sockets).
            protected=(*self.cfg.protected_paths, str(self.cfg.state_dir)),
            step_hook=step_hook,
            allow_hard_links=self.cfg.allow_hard_links,
        )

    def recover(self, *, apply: bool = True) -> list[RecoveryAction]:
        """Roll back crashed transactions; then forget claims whose process died before
        its labelling committed (the rollback already put the files back), MCS levels
        held by a dead process for an unclaimed name, and XML views without a claim.
        Cheap enough to run before every mutating command."""
        actions = recover(self.journal, apply=apply)
        if not apply:
            return actions
        rows = self.store.rows()
        claimed = {name for name, *_ in rows}
        for name, state, _pid, owner, pending in rows:
            if pid_alive(owner, self.store.owner_start(name)):
                continue
            if state in (DomainState.LABELLING, DomainState.STARTING):
                log.info("forgetting %s: its svirt process %d died while labelling", name, owner)
                self._release_levels(name)
                self.store.remove(name)
                claimed.discard(name)
            elif state == DomainState.RESTORING:
                # The rollback above put its files back as they were before the restore.
                self.store.set_state(
                    name,
                    DomainState.RESTORE_FAILED if pending else DomainState.LABELLED,
                    pending=pending,
                )
        drv = self.selinux
        if drv is not None:
            for domain, pid in drv.ledger.holders():
                if (
                    domain not in claimed
                    and not domain.startswith("libvirt:")
                    and not (pid_alive(pid))
                ):
                    log.info("releasing the MCS level of %s: process %d is gone", domain, pid)
                    drv.ledger.release(domain)
        if self.identities is not None:
            for held in self.identities.holders():
                if held.domain not in claimed and not held.holder_alive():
                    log.info(
                        "releasing the QEMU identity %d of %s: process %d is gone",
                        held.id,
                        held.domain,
                        held.pid,
                    )
                    self.identities.release(held.domain)
        self.store.sync_views()
        return actions

    def record_shared(self, domain: Domain) -> None:
        """Record in the ledger the files this host labelled for ``domain`` (the fleet
        ledger tells other hosts' doctor who holds a shared file). Never fatal."""
        drv = self.selinux
        if drv is None or self.cfg.ledger != "etcd":
            return  # one host: doctor sees its own domains
        paths = sorted(
            {
                os.path.realpath(op.path)
                for op in drv.set_ops(domain, list(domain_resources(domain)))
                if not op.path.startswith("/dev/")
            }
        )
        try:
            drv.ledger.record_files(domain.name, paths)
        except SvirtError as exc:
            log.warning(
                "could not record the files of domain %s in the fleet ledger: %s", domain.name, exc
            )

    def _release_levels(self, name: str) -> None:
        drv = self.selinux
        if drv is not None:
            drv.ledger.release(name)
        if self.identities is not None:
            self.identities.release(name)

    def plan(self, domain: Domain, ops: Sequence[LabelOp]) -> list[PlannedOp]:
        """Each operation with the file's current state, what applying it would do now
        (the driver's preview: a chown that will be skipped, the ACL entry it adds) and
        what the restore will do (from the drivers' restore plan and rules)."""
        restores = {(o.driver, o.path): o for o in self.restore_ops(domain)}
        kept = {(lf.driver, lf.path): lf.why for lf in self.left(domain, Action.RESTORE) if lf.why}
        planned = []
        for op in ops:
            drv = self.drivers[op.driver]
            remembered = None
            try:
                info = read_remembered(op.path, op.driver)
                remembered = info.original if info is not None else None
            except OSError:
                pass
            preview = drv.preview(op) if op.action is Action.SET else None
            undo = preview.undo if preview is not None else None
            if undo is None:
                back = restores.get((op.driver, op.path))
                if preview is not None and preview.outcome is Outcome.USABLE:
                    undo = "nothing to undo"
                elif back is None:
                    undo = "not restored: " + kept.get((op.driver, op.path), "libvirt's rule")
                elif back.remember and op.remember and self.cfg.remember_owner:
                    undo = "restored to the remembered original"
                else:
                    why = "remember_owner = 0" if not self.cfg.remember_owner else "not remembered"
                    undo = f"reset to the default ({why})"
            planned.append(PlannedOp(op, drv.current(op.path), remembered, preview, undo))
        return planned

    @staticmethod
    def ordered(
        domain: Domain, outcomes: Sequence[rep.ResourceOutcome]
    ) -> list[rep.ResourceOutcome]:
        """Outcomes in the domain's order of resources (what the CLI lists)."""
        return rep.ordered(outcomes, [r.path for r in domain_resources(domain) if r.path])

    def left(
        self, domain: Domain, action: Action, resources: Sequence[Resource] | None = None
    ) -> list[Left]:
        """What every driver's rules leave alone for this domain, and why."""
        res = list(domain_resources(domain)) if resources is None else list(resources)
        return [lf for drv in self.drivers.values() for lf in drv.left(domain, res, action)]

    def label_domain(
        self, domain: Domain, *, step_hook: Callable[[int], None] | None = None
    ) -> Domain:
        """``svirt label``: generate labels, record the domain, label every resource."""
        return self.label(domain, step_hook=step_hook).domain

    def label(
        self, domain: Domain, *, step_hook: Callable[[int], None] | None = None
    ) -> LabelResult:
        """:meth:`label_domain`, with what happened to each resource."""
        self.recover()
        # Claiming the name first makes a second process labelling the same domain fail
        # here, before it allocates or touches anything.
        self.store.claim(domain.name, DomainState.LABELLING, os.getpid())
        try:
            live = self.gen_labels(domain)

            def commit(_result: TransactionResult) -> None:
                self.store.set_state(live.name, DomainState.LABELLED)
                self.store.set_domain(live)

            left = [rep.from_left(lf) for lf in self.left(live, Action.SET)]
            result = self.transaction(step_hook).run(
                live.name, self.set_ops(live), on_commit=commit
            )
            self.record_shared(live)
        except BaseException:
            # The transaction put every file back; give back the level and the name.
            self._release_levels(domain.name)
            self.store.remove(domain.name)
            raise
        self.store.sync_view(live.name)
        return LabelResult(live, tuple(self.ordered(live, [*left, *result.report])))

    def dry_run(self, domain: Domain) -> tuple[Domain, list[PlannedOp]]:
        """The plan of ``label_domain`` without changing anything (the ledger allocation
        happens inside a database transaction that is rolled back)."""
        plan = self.plan_domain(domain)
        return plan.domain, list(plan.ops)

    def plan_domain(self, domain: Domain) -> Plan:
        """:meth:`dry_run`, with what the drivers' rules leave alone."""
        drv = self.selinux
        preview = drv.ledger.preview() if drv is not None else contextlib.nullcontext()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            with preview:
                live = self.gen_labels(domain)
            ops = self.plan(live, self.set_ops(live))
            return Plan(live, tuple(ops), tuple(self.left(live, Action.SET)))
        finally:
            self.conn.execute("ROLLBACK")

    def restore_domain(
        self, name: str, fallback: Domain | None = None
    ) -> tuple[Domain, TransactionResult]:
        """``svirt restore``: restore every label of a labelled domain and release it."""
        self.recover()
        rec = self.store.read(name)
        if rec is None and any(row[0] == name for row in self.store.rows()):
            # Claimed but not described yet: another svirt process is labelling it.
            raise SecurityError(
                PREFIX_OPERATION_INVALID
                + f"domain '{name}' is being changed by another svirt process"
            )
        if rec is not None and rec.state not in (DomainState.LABELLED, DomainState.RESTORE_FAILED):
            raise SecurityError(
                PREFIX_OPERATION_INVALID
                + f"domain '{name}' is {rec.state}; use 'svirt stop' for a running domain"
            )
        domain = rec.domain if rec is not None else fallback
        if domain is None or not any(s.label or s.imagelabel for s in domain.seclabels):
            raise SecurityError(
                PREFIX_OPERATION_INVALID + f"domain '{name}' has no labels to restore"
            )
        if rec is None and not self._owns_labels(domain):
            # A live XML of a domain svirt did not label (a copy of another's dumpxml):
            # restoring from it would take the real user's references and labels.
            raise SecurityError(
                PREFIX_OPERATION_INVALID
                + f"domain '{name}' was not labelled by svirt on this host; nothing to restore"
            )
        pending = (
            rec.pending if rec is not None and rec.state == DomainState.RESTORE_FAILED else None
        )
        if rec is not None and (
            rec.owner is None
            or not self.store.take(name, (rec.state,), rec.owner, DomainState.RESTORING)
        ):
            raise SecurityError(
                PREFIX_OPERATION_INVALID
                + f"domain '{name}' is being changed by another svirt process"
            )
        result = self.restore_and_release(domain, pending)
        OutcomeReports(self.conn).take(name)  # returned here: nobody else reads it
        return self.release_labels(domain), result

    def _foreign_paths(self, domain: Domain, ops: Sequence[LabelOp]) -> set[str]:
        """Paths that now name a file carrying another running domain's MCS level (an
        image swapped for a symlink to another VM's image while this one ran: issue
        11). Restoring them would take the other VM's labels and owner away while it
        runs; they are left alone, and said so."""
        drv = self.selinux
        if drv is None:
            return set()
        out: set[str] = set()
        mine: dict[str, str | None] | None = None
        for op in ops:
            if op.driver != "selinux" or not op.remember or op.path in out:
                continue
            try:
                label = host_selinux.getfilecon(op.path)
            except OSError:
                continue
            if label is None or label.count(":") < 3:
                continue
            if mine is None:
                try:
                    mine = {o.path: o.value for o in self.set_ops(domain) if o.driver == "selinux"}
                except SvirtError:
                    mine = {}
            try:
                level = str(MLSRange.parse(label.split(":", 3)[3]))
                if mine.get(op.path) != label:
                    owner = drv.ledger.owner(level)
                elif self._replaced(domain.name, op.path):
                    # The label this domain set, but on another file than the one it
                    # labelled: a static label shared with other domains is on their
                    # files too (a.img swapped for a symlink to a sharer's b.img).
                    owner = next(
                        (
                            r.domain
                            for r in drv.ledger.reservations()
                            if r.kind != "blocked" and r.level == level and r.domain != domain.name
                        ),
                        None,
                    )
                else:
                    continue  # the label this domain set (one label shared on purpose)
            except (SvirtError, ValueError):
                continue
            if owner is not None and owner != domain.name:
                log.warning(
                    "%s now names a file labelled for domain '%s' (replaced while '%s' ran?): "
                    "left alone",
                    op.path,
                    owner,
                    domain.name,
                )
                out.add(op.path)
        return out

    def _replaced(self, name: str, path: str) -> bool:
        """Whether ``path`` names another file (inode) than the one ``name``'s labelling
        changed there (svirt's own copy of the original records that inode)."""
        kept = KeptOriginals(self.conn).get(name, "selinux", path)
        if kept is None:
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != (kept.dev, kept.ino)

    def _owns_labels(self, domain: Domain) -> bool:
        sl = domain.seclabel("selinux")
        drv = self.selinux
        if sl is None or sl.label is None or drv is None or sl.label.count(":") < 3:
            return False
        try:
            level = str(MLSRange.parse(sl.label.split(":", 3)[3]))
        except ContextError:
            return False
        # levels_of, not owner: a static label several domains share has several holders.
        return level in drv.ledger.levels_of(domain.name)

    def restore_and_release(
        self,
        domain: Domain,
        pending: Sequence[str] | None = None,
        *,
        exclude: Callable[[str], bool] | None = None,
    ) -> TransactionResult:
        """Restore a domain's labels (best effort), then release its MCS level and remove
        its record. Paths that could not be restored are kept in the record, in state
        ``restore-failed``, so that a later run restores exactly those and nothing twice
        (a second recall would take another domain's reference)."""
        ops = self.restore_ops(domain)
        if pending is not None:
            ops = [op for op in ops if f"{op.driver}:{op.path}" in pending]
        if exclude is not None:  # e.g. device nodes only a VM's private /dev copy carried
            ops = [op for op in ops if not exclude(op.path)]
        foreign = self._foreign_paths(domain, ops)
        if foreign:
            ops = [op for op in ops if op.path not in foreign]
        left = [] if pending is not None else self.left(domain, Action.RESTORE)
        if exclude is not None:
            left = [lf for lf in left if not exclude(lf.path)]
        before = [rep.from_left(lf) for lf in left] + [
            rep.ResourceOutcome(
                op.driver,
                op.action.value,
                op.owner,
                op.path,
                rep.LEFT,
                f"{'owner' if op.driver == 'dac' else 'label'} left as it is: the path now "
                "names a file labelled for another running domain",
                why="replaced by another domain's file",
            )
            for op in self.restore_ops(domain)
            if op.path in foreign
        ]

        def failed_of(result: TransactionResult) -> list[str]:
            return sorted({f"{op.driver}:{op.path}" for op, _ in result.errors})

        def commit(result: TransactionResult) -> None:
            # In the same database transaction as the journal's close: a crash either
            # leaves the files labelled and the domain claimed, or both released.
            failed = failed_of(result)
            result.report[:] = self.ordered(domain, [*before, *result.report])
            OutcomeReports(self.conn).put(domain.name, [o.to_json() for o in result.report])
            if failed:
                self.store.set_state(domain.name, DomainState.RESTORE_FAILED, pending=failed)
            else:
                self._release_levels(domain.name)
                self.store.drop(domain.name, owner=os.getpid())

        result = self.transaction().run(domain.name, ops, best_effort=True, on_commit=commit)
        failed = failed_of(result)
        if failed:
            self.store.write(domain, DomainState.RESTORE_FAILED, pending=failed)
            first = result.errors[0][1]
            raise SecurityError(
                f"could not restore {len(failed)} path(s) of domain '{domain.name}' "
                f"(first: {first}); fix the cause and run 'svirt restore' again"
            )
        self.store.remove_view(domain.name)
        return result


# --- restore (issue 14): by name, from svirt's record ------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What ``svirt restore NAME|DOMAIN.xml`` did. ``from_record``: the labels were
    restored from svirt's record (what was labelled), not from a given XML;
    ``differences`` says how a given XML differs from that record (it changed nothing)."""

    name: str
    from_record: bool
    result: TransactionResult
    differences: tuple[str, ...] = ()
    # the MCS levels the domain held, and those other domains still hold after it let
    # go (a static label they share): (level, (domain, ...))
    levels: tuple[str, ...] = ()
    kept: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def levels_text(self) -> str:
        """What became of the domain's MCS level: released, kept for the domains that
        share it, or nothing at all (no SELinux label)."""
        kept = dict(self.kept)
        parts = [
            f"MCS level {lv} still held by {', '.join(kept[lv])} (a static label they share)"
            if lv in kept
            else "MCS level released"
            for lv in self.levels
        ]
        return "; ".join(parts)

    @property
    def outcomes(self) -> tuple[rep.ResourceOutcome, ...]:
        """What happened to each resource (restored, reset, left as it is, and why)."""
        return tuple(self.result.report)

    @property
    def summary(self) -> str:
        return rep.summary(self.outcomes)

    @property
    def restored(self) -> list[str]:
        """The paths whose label or owner was changed back."""
        return sorted({o.path for o in self.outcomes if o.changed})

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(str(e) for _, e in self.result.errors)


def _resource_paths(domain: Domain) -> set[str]:
    return {r.path for r in domain_resources(domain) if r.path is not None and r.local}


def xml_differences(recorded: Domain, given: Domain) -> tuple[str, ...]:
    """How a domain XML given to ``restore`` differs from what was labelled (its record):
    the resources only one of them lists. Empty when they name the same files."""
    mine, theirs = _resource_paths(recorded), _resource_paths(given)
    out = []
    if theirs - mine:
        out.append("only in the XML: " + ", ".join(sorted(theirs - mine)))
    if mine - theirs:
        out.append("only in the record: " + ", ".join(sorted(mine - theirs)))
    return tuple(out)


def restore_target(cfg: Config, target: str | os.PathLike[str] | Domain) -> RestoreReport:
    """``svirt restore``: the argument is a domain name unless it names an existing file,
    which is then read as domain XML. Whenever svirt has a record of the domain, the
    labels are restored from it (what was labelled), whatever the XML says now; the XML
    serves only for a domain svirt has no record of (whose labels it must own). A name
    that is neither a record nor a file fails with libvirt's "failed to get domain"."""
    given: Domain | None = None
    if isinstance(target, Domain):
        given = target
        name = target.name
    else:
        name = os.fspath(target)
    if given is None and os.path.isfile(name):
        source = name
        given = parse_domain_file(source, default_model=default_model(cfg))
        try:
            check_domain(given, cfg)
        except SvirtError as exc:
            raise exc.with_source(source) from None
        name = given.name
    mgr = SecurityManager(cfg)
    try:
        mgr.store.path(name)
        rec = mgr.store.read(name)
    except StateError:
        rec = None
    if rec is None and given is None:
        mgr.recover()  # a dead claim of this name is forgotten, not reported as busy
        if not any(row[0] == name for row in mgr.store.rows()):
            raise SecurityError(f"failed to get domain '{name}'")
    differences = xml_differences(rec.domain, given) if rec is not None and given else ()
    drv = mgr.selinux
    levels = tuple(drv.ledger.levels_of(name)) if drv is not None else ()
    _released, result = mgr.restore_domain(name, fallback=given)
    kept: list[tuple[str, tuple[str, ...]]] = []
    if drv is not None and levels:
        others = [r for r in drv.ledger.reservations() if r.kind != "blocked" and r.domain != name]
        for lv in levels:
            holders = tuple(r.domain for r in others if r.level == lv)
            if holders:
                kept.append((lv, holders))
    return RestoreReport(name, rec is not None, result, differences, levels, tuple(kept))


def _warn_unenforced_once(conn: sqlite3.Connection) -> None:
    """Say once per boot (not on every command) that labels are not enforced here."""
    if host_selinux.is_enabled():
        return
    key, boot = "warned_unenforced", str(boot_time())
    row = conn.execute("SELECT value FROM mcs_meta WHERE key=?", (key,)).fetchone()
    if row is not None and row[0] == boot:
        return
    with write_transaction(conn):
        conn.execute("INSERT OR REPLACE INTO mcs_meta(key, value) VALUES (?, ?)", (key, boot))
    log.warning(
        "SELinux is not enabled in this kernel: svirt writes file labels for real, but "
        "nothing is enforced on this host and process labels are only recorded"
    )
