"""The public Python API: a :class:`Host` and the :class:`Domain` handles it gives out.

This module is the typed face of svirt for programs (orchestrators, CI farms) and the one
thing ``svirt.cli`` calls. It adds no behaviour of its own: each method is one call into
the packages below (``launch``, ``security``, ``doctor``, ``policy``), which keep every
rule. ``docs/api.md`` documents it with examples the test suite runs; what is stable is
written there (:data:`API_VERSION` follows semantic versioning).

Every error a method raises for bad input or a failure is a :class:`~svirt.errors.SvirtError`
subclass: an ``OSError`` or a database error from below is turned into one at this
boundary (naming the file where there is one).
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from svirt.conf import Config, load_config
from svirt.domain import format_domain, parse_disk, parse_domain, parse_domain_file
from svirt.domain.model import Disk
from svirt.domain.model import Domain as DomainDefinition
from svirt.errors import LaunchError, StateError, SvirtError

if TYPE_CHECKING:
    from svirt.doctor import DoctorReport, RecoverReport
    from svirt.domain.blklist import BlockDevice  # tools
    from svirt.host.fileinfo import FileLabels
    from svirt.launch.lifecycle import HotplugResult, StartResult, StopResult
    from svirt.launch.listing import DomainStatus
    from svirt.policy.oracle import PolicyOracle
    from svirt.policy.verify import VerifyReport
    from svirt.security.manager import LabelResult, Plan, RestoreReport
    from svirt.state.domains import DomainRecord

__all__ = [
    "API_VERSION",
    "Domain",
    "DomainDefinition",
    "Host",
    "Labels",
    "boot_time",
    "file_labels",
]

#: The version of this API (not of the package): a major bump breaks callers.
API_VERSION = "1.0"

XMLSource = str | bytes | os.PathLike[str] | DomainDefinition

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _public(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """One exception hierarchy: an OSError (other than a closed pipe) or a sqlite3 error
    escaping the layers below becomes a SvirtError naming the file."""

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except (SvirtError, BrokenPipeError):
            raise
        except sqlite3.Error as exc:
            raise StateError(f"state database: {exc}") from exc
        except OSError as exc:
            source = None if exc.filename is None else os.fsdecode(exc.filename)
            raise SvirtError(exc.strerror or str(exc), source=source) from exc

    return call


@dataclass(frozen=True, slots=True)
class Labels:
    """The labels a domain runs with: SELinux process and image labels, DAC user:group."""

    process: str | None
    image: str | None
    dac: str | None
    enforced: bool


def _labels_of(definition: DomainDefinition, enforced: bool) -> Labels:
    sl = definition.seclabel("selinux")
    dac = definition.seclabel("dac")
    return Labels(
        process=sl.label if sl else None,
        image=sl.imagelabel if sl else None,
        dac=dac.label if dac else None,
        enforced=enforced,
    )


@_public
def file_labels(path: str | os.PathLike[str]) -> FileLabels:
    """``svirt ls -Z``: a file's label, owner, mode, remembered originals and svirt's ACL
    references (stale ones marked)."""
    from svirt.host.fileinfo import file_labels as _file_labels

    return _file_labels(os.fspath(path))


@_public
def boot_time() -> int:
    """This boot's time in Unix seconds (``btime`` of /proc/stat), as libvirt's remembered
    timestamps record it (a remembered original from another boot is stale). Not
    :func:`svirt.audit.boot_time`, which is ausearch's ``boot`` (now minus uptime)."""
    from svirt.host.remembered import boot_time as _boot_time

    return _boot_time()


class Host:
    """This machine, as configured by one ``svirt.conf``.

    ``config`` is a :class:`~svirt.conf.Config`, a path to a TOML file, or None for
    ``/etc/svirt/svirt.conf`` (built-in defaults when it does not exist).
    """

    @_public
    def __init__(self, config: Config | str | os.PathLike[str] | None = None) -> None:
        self.config: Config = config if isinstance(config, Config) else load_config(config)

    def __repr__(self) -> str:
        return f"<svirt.Host {self.config.source or 'defaults'}>"

    # -- domain XML -------------------------------------------------------------------

    @_public
    def definition(self, xml: XMLSource, *, inactive: bool | None = None) -> DomainDefinition:
        """Parse and check a domain: a path, XML text (``str`` starting with ``<`` or
        ``bytes``), or an already parsed definition. ``inactive``: True for a persistent
        definition, False for live (status) XML, None to tell from the XML. Errors name
        the file."""
        from svirt.security.manager import check_domain, default_model

        if isinstance(xml, DomainDefinition):
            definition = xml
            source = None
        elif isinstance(xml, bytes) or (isinstance(xml, str) and xml.lstrip().startswith("<")):
            definition = parse_domain(
                xml, inactive=inactive, default_model=default_model(self.config)
            )
            source = None
        else:
            source = os.fspath(xml)
            definition = parse_domain_file(
                source, inactive=inactive, default_model=default_model(self.config)
            )
        try:
            check_domain(definition, self.config)
        except SvirtError as exc:
            raise (exc.with_source(source) if source else exc) from None
        return definition

    @_public
    def preflight(self, xml: XMLSource) -> list[str]:
        """What QEMU would be denied with the labels :meth:`start` would give, one line
        per finding (``svirt validate --preflight``); nothing is allocated or changed."""
        from svirt.launch.preflight import preflight_summary

        return preflight_summary(self.config, self.definition(xml))

    # -- lifecycle --------------------------------------------------------------------

    @_public
    def start(self, xml: XMLSource) -> Domain:
        """``svirt start``: start a domain confined by sVirt (``xml`` is parsed as a
        persistent definition, as ``virsh create`` does); returns its handle once QMP
        answers. What start reported (pid, labels, whether the image label was applied,
        what happened to each resource, notes, warnings, seconds) is the handle's
        :attr:`Domain.started`."""
        from svirt.launch.lifecycle import start_domain

        result = start_domain(self.config, self.definition(xml, inactive=True))
        return Domain(self, result.name, started=result)

    @_public
    def domain(self, name: str) -> Domain:
        """The handle of a domain svirt knows (running, labelled, or failed to restore);
        raises :class:`~svirt.errors.LaunchError` (libvirt's text) when there is none."""
        from svirt.security.manager import SecurityManager

        if SecurityManager(self.config).store.read(name) is None:
            raise LaunchError(f"failed to get domain '{name}'")
        return Domain(self, name)

    @_public
    def domains(self) -> list[Domain]:
        """Every domain svirt has a record of, after reconciling dead monitors."""
        from svirt.launch.lifecycle import reconcile
        from svirt.security.manager import SecurityManager

        mgr = SecurityManager(self.config)
        reconcile(self.config, mgr)
        return [Domain(self, rec.domain.name) for rec in mgr.store.records()]

    @_public
    def listing(self, *, libvirt: bool = True) -> list[DomainStatus]:
        """``svirt list``: svirt's domains (after reconciling dead monitors), then, with
        ``libvirt``, libvirt's running domains from its status XML."""
        from svirt.launch.listing import domain_statuses

        return domain_statuses(self.config, libvirt=libvirt)

    # -- labels without a VM ----------------------------------------------------------

    @_public
    def label(self, xml: XMLSource) -> LabelResult:
        """``svirt label``: generate labels and label every resource, without QEMU;
        returns the live definition (``.domain``, with the generated seclabels) and what
        happened to each resource (``.outcomes``). A live XML (``dumpxml``'s) keeps its
        labels: it is parsed as libvirt's status form."""
        from svirt.security.manager import SecurityManager

        return SecurityManager(self.config).label(self.definition(xml, inactive=None))

    @_public
    def restore(self, target: str | os.PathLike[str] | DomainDefinition) -> RestoreReport:
        """``svirt restore NAME|DOMAIN.xml``: restore every label of a labelled domain
        (or one whose restore failed) and release its MCS pair. ``target`` is a domain
        name unless it names an existing file (then domain XML). What is restored comes
        from svirt's record of what was labelled whenever there is one: an XML file
        that was deleted or edited since changes nothing (the report lists how an
        edited one differs). Raises :class:`~svirt.errors.SecurityError` with libvirt's
        "failed to get domain 'NAME'" for a name that is neither a record nor a file."""
        from svirt.security.manager import restore_target

        return restore_target(self.config, target)

    # -- checks and repairs -----------------------------------------------------------

    @_public
    def verify(
        self,
        names: Sequence[str] | None = None,
        *,
        policy: PolicyOracle | str | os.PathLike[str] | None = None,
        backend: str | None = None,
    ) -> VerifyReport:
        """``svirt verify [NAME...]``: can any running VM (svirt's or libvirt's) reach
        another's resources? From ``policy`` (default: svirt.conf's ``policy_path``, else
        the installed one, with the kernel's current booleans) and the DAC layer, with the
        matrix of every VM against every resource. ``names``: only these domains, each
        against every other; an unknown one raises :class:`~svirt.errors.LaunchError`
        ("failed to get domain 'NAME'")."""
        from svirt.policy.oracle import PolicyOracle, with_active_booleans
        from svirt.policy.verify import verify

        if isinstance(policy, PolicyOracle):
            oracle = policy
        else:
            path = Path(policy) if policy is not None else self.config.policy_path
            oracle = PolicyOracle(path, backend=backend)
            if policy is None:  # the loaded policy: with the kernel's booleans
                oracle = with_active_booleans(oracle)
        return verify(self.config, oracle, names=names)

    @_public
    def doctor(self, *targets: str) -> DoctorReport:
        """``svirt doctor``: stale remembered xattrs, refcount drift, orphan labels,
        category clashes, for domain names and paths (none: everything svirt can see)."""
        from svirt.doctor import examine

        return examine(self.config, targets)

    @_public
    def recover(
        self, *paths: str, apply: bool = False, take_from_libvirt: bool = False
    ) -> RecoverReport:
        """``svirt recover``: what repairing the doctor's findings does; changes files only
        with ``apply``. ``take_from_libvirt`` also repairs files of a dead libvirt domain
        whose status XML libvirtd keeps."""
        from svirt.doctor import recover

        return recover(self.config, paths, apply=apply, take_from_libvirt=take_from_libvirt)

    # -- the fleet ledger (ledger = "etcd") -------------------------------------------

    @_public
    def migrate_label(self, name: str, to: str) -> str:
        """Hand domain ``name``'s MCS level to host ``to``; returns the level."""
        from svirt.security.fleet import etcd_ledger

        return etcd_ledger(self.config).migrate(name, to)

    @_public
    def fleet_forget(self, name: str) -> str:
        """Give up the MCS level that follows domain ``name``; returns the level."""
        from svirt.security.fleet import etcd_ledger

        return etcd_ledger(self.config).forget(name)

    @_public
    def fleet_status(self) -> dict[str, Any]:
        """This host in the etcd fleet ledger: cluster, keeper, reservations."""
        from svirt.security.fleet import fleet_status
        from svirt.security.manager import SecurityManager

        return fleet_status(self.config, SecurityManager(self.config).conn)

    # html: `svirt verify --html` (issue 14) -------------------------------------

    @_public
    def verify_page(
        self,
        report: VerifyReport,
        *,
        audit_log: str | os.PathLike[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> str:
        """``svirt verify --html``: one self-contained HTML page of ``report`` (from
        :meth:`verify`); with ``audit_log``, the denial timeline of ``audit explain``
        on it (with ``names``, only the denials of those domains or on their files)."""
        from svirt.policy.oracle import PolicyOracle
        from svirt.policy.report_html import denial_timeline, render_page

        timeline = None
        if audit_log is not None:
            timeline = denial_timeline(
                [audit_log],
                oracle=PolicyOracle(report.policy, backend=report.backend),
                state_dir=self.config.state_dir,
                libvirt_run_dir=self.config.libvirt_run_dir,
                names=names,
            )
        return render_page(report, timeline=timeline, timeline_source=os.fspath(audit_log or ""))

    # static: shared static labels (issue 14) ------------------------------------------

    @_public
    def sharers(self, label: str) -> tuple[str, ...]:
        """The domains of this host that hold the MCS level of ``label`` (a context or a
        level), oldest first: several only when each set it as its static label."""
        from svirt.context import MLSRange, SecurityContext
        from svirt.errors import ContextError
        from svirt.security.manager import SecurityManager

        try:
            level = str(SecurityContext.parse(label).range or "")
        except ContextError:
            level = str(MLSRange.parse(label))
        drv = SecurityManager(self.config).selinux
        if drv is None:
            return ()
        return tuple(
            r.domain for r in drv.ledger.reservations() if r.kind != "blocked" and r.level == level
        )

    # honest (issue 14): the dry run's real plan ----------------------------------------

    @_public
    def plan(self, xml: XMLSource) -> Plan:
        """``svirt label --dry-run``: the labels a domain would get, each operation with
        what it would do to the file now (skipped chowns, ACL entries) and what the
        restore will do, and what the rules leave alone. Changes nothing."""
        from svirt.security.manager import SecurityManager

        return SecurityManager(self.config).plan_domain(self.definition(xml, inactive=None))


class Domain:
    """A handle on one domain of a :class:`Host`. Properties read the current record.

    ``Domain(host, name)`` makes a handle without looking the domain up (use
    :meth:`Host.domain` for that); each method raises when the domain is not there.
    """

    def __init__(self, host: Host, name: str, *, started: StartResult | None = None) -> None:
        self.host = host
        self.name = name
        #: What :meth:`Host.start` reported for a handle it returned (pid, labels,
        #: ``imagelabel_status``, each resource's outcome, notes, warnings, seconds);
        #: None for a handle from :meth:`Host.domain` or :meth:`Host.domains`.
        self.started = started

    def __repr__(self) -> str:
        return f"<svirt.Domain {self.name!r}>"

    def _record(self) -> DomainRecord:
        from svirt.security.manager import SecurityManager

        rec = SecurityManager(self.host.config).store.read(self.name)
        if rec is None:
            raise LaunchError(f"failed to get domain '{self.name}'")
        return rec

    @property
    @_public
    def definition(self) -> DomainDefinition:
        """The live definition, with the generated seclabels."""
        return self._record().domain

    @property
    @_public
    def xml(self) -> str:
        """The live XML (libvirt's status form, as ``svirt dumpxml`` prints it)."""
        return format_domain(self.definition, live=True)

    @property
    @_public
    def labels(self) -> Labels:
        """The process, image and DAC labels; ``enforced`` is False where SELinux is off."""
        from svirt.host import selinux as host_selinux

        return _labels_of(self.definition, host_selinux.is_enabled())

    @property
    @_public
    def pid(self) -> int | None:
        """QEMU's pid (None before it runs)."""
        return self._record().pid

    @property
    @_public
    def state(self) -> str:
        """The record's state: ``running``, ``labelled``, ``restore-failed``, ..."""
        return str(self._record().state)

    @_public
    def stop(
        self,
        *,
        force: bool = False,
        timeout: float = 10.0,
        progress: Callable[[str], None] | None = None,
    ) -> StopResult:
        """Stop the guest; returns how QEMU stopped (``.how``) and what the restore did
        to each resource (``.outcomes``). ``progress`` is told what is waited for (issue
        14: honest commands)."""
        from svirt.launch.lifecycle import stop

        return stop(self.host.config, self.name, force=force, timeout=timeout, progress=progress)

    @_public
    def erased_originals(self) -> list[str]:
        """Warnings for remembered originals someone else erased (libvirt's defect), which
        :meth:`stop` puts back from svirt's own copy; ask before stopping."""
        from svirt.launch.lifecycle import erased_memory

        return erased_memory(self.host.config, self.name)

    @_public
    def shared_media_notes(self) -> list[str]:
        """What :meth:`stop` leaves as the VM had it: read-only and shareable media (as
        libvirt does); ask before stopping."""
        from svirt.launch.lifecycle import shared_media_notes

        return shared_media_notes(self.host.config, self.name)

    @_public
    def attach_disk(self, disk: str | bytes | os.PathLike[str] | Disk) -> HotplugResult:
        """Hotplug a disk given as ``<disk>`` XML text, a path to it, or a parsed Disk;
        returns the new definition and what happened to each of its files."""
        from svirt.launch.lifecycle import attach

        if not isinstance(disk, Disk):
            if isinstance(disk, bytes) or (isinstance(disk, str) and disk.lstrip().startswith("<")):
                disk = parse_disk(disk)
            else:
                path = os.fspath(disk)
                try:
                    with open(path, "rb") as fh:
                        data = fh.read(1 << 20)
                except OSError as exc:
                    raise SvirtError(
                        f"cannot read disk XML: {exc.strerror}", source=str(path)
                    ) from None
                disk = parse_disk(data, source=str(path))
        return attach(self.host.config, self.name, disk)

    @_public
    def detach_disk(self, target: str) -> HotplugResult:
        """Hot-unplug the disk with this target (``vdb``) and restore its labels; returns
        the new definition and what the restore did to each of its files."""
        from svirt.launch.lifecycle import detach

        return detach(self.host.config, self.name, target)

    @_public
    def disks(self) -> Sequence[Disk]:
        """The domain's disks as it runs, parsed (sources, backing chains, seclabels);
        :meth:`block_devices` is the ``svirt domblklist`` view of them."""
        return self.definition.disks

    # -- tools: svirt domblklist ------------------------------------------------------

    @_public
    def block_devices(self) -> list[BlockDevice]:
        """The disks as ``virsh domblklist`` lists them (type, device, target, source),
        read from the live XML: hotplugged disks included, a drive without media with
        ``source`` None."""
        from svirt.domain.blklist import block_devices

        return block_devices(self.xml)
