"""The public Python API: a :class:`Host` and the :class:`Domain` handles it gives out.

This module is the typed face of svirt for programs (orchestrators, CI farms) and the one
thing ``svirt.cli`` calls. It adds no behaviour of its own: each method is one call into
the packages below (``launch``, ``security``, ``doctor``, ``policy``), which keep every
rule. ``docs/api.md`` documents it with examples the test suite runs; what is stable is
written there (:data:`API_VERSION` follows semantic versioning).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from svirt.conf import Config, load_config
from svirt.domain import format_domain, parse_disk, parse_domain, parse_domain_file
from svirt.domain.model import Disk
from svirt.domain.model import Domain as DomainDefinition
from svirt.errors import LaunchError, SvirtError

if TYPE_CHECKING:
    from collections.abc import Callable

    from svirt.launch.lifecycle import HotplugResult, StartResult, StopResult
    from svirt.security.manager import LabelResult, Plan, RestoreResult
    from svirt.state.domains import DomainRecord

__all__ = [
    "API_VERSION",
    "Domain",
    "DomainDefinition",
    "Host",
    "Labels",
]

#: The version of this API (not of the package): a major bump breaks callers.
API_VERSION = "1.0"

XMLSource = str | bytes | os.PathLike[str] | DomainDefinition


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


class Host:
    """This machine, as configured by one ``svirt.conf``.

    ``config`` is a :class:`~svirt.conf.Config`, a path to a TOML file, or None for
    ``/etc/svirt/svirt.conf`` (built-in defaults when it does not exist).
    """

    def __init__(self, config: Config | str | os.PathLike[str] | None = None) -> None:
        self.config: Config = config if isinstance(config, Config) else load_config(config)

    # -- domain XML -------------------------------------------------------------------

    def definition(self, xml: XMLSource, *, inactive: bool | None = True) -> DomainDefinition:
        """Parse and check a domain: a path, XML text (``str`` starting with ``<`` or
        ``bytes``), or an already parsed definition. Errors name the file."""
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

    # -- lifecycle --------------------------------------------------------------------

    def start(self, xml: XMLSource) -> Domain:
        """Start a domain confined by sVirt; returns its handle once QMP answers."""
        from svirt.launch.lifecycle import start_domain

        result = start_domain(self.config, self.definition(xml))
        return Domain(self, result.name)

    def domain(self, name: str) -> Domain:
        """The handle of a domain svirt knows (running, labelled, or failed to restore);
        raises :class:`~svirt.errors.LaunchError` (libvirt's text) when there is none."""
        from svirt.security.manager import SecurityManager

        if SecurityManager(self.config).store.read(name) is None:
            raise LaunchError(f"failed to get domain '{name}'")
        return Domain(self, name)

    def domains(self) -> list[Domain]:
        """Every domain svirt has a record of, after reconciling dead monitors."""
        from svirt.launch.lifecycle import reconcile
        from svirt.security.manager import SecurityManager

        mgr = SecurityManager(self.config)
        reconcile(self.config, mgr)
        return [Domain(self, rec.domain.name) for rec in mgr.store.records()]

    # -- labels without a VM ----------------------------------------------------------

    def label(self, xml: XMLSource) -> DomainDefinition:
        """``svirt label``: generate labels and label every resource; returns the live
        definition (with the generated seclabels)."""
        from svirt.security.manager import SecurityManager

        return SecurityManager(self.config).label_domain(self.definition(xml))

    # honest (issue 14): every command says what happened to each resource --------------

    def start_report(self, xml: XMLSource) -> StartResult:
        """:meth:`start`, returning the monitor's report: pid, labels, whether the image
        label was applied, and what happened to each resource (``.outcomes``)."""
        from svirt.launch.lifecycle import start_domain

        return start_domain(self.config, self.definition(xml))

    def label_report(self, xml: XMLSource) -> LabelResult:
        """:meth:`label`, with what happened to each resource (``.outcomes``)."""
        from svirt.security.manager import SecurityManager

        # a live XML (``dumpxml``) keeps its labels: parsed as libvirt's status form
        return SecurityManager(self.config).label(self.definition(xml, inactive=None))

    def plan(self, xml: XMLSource) -> Plan:
        """``svirt label --dry-run``: the labels a domain would get, each operation with
        what it would do to the file now (skipped chowns, ACL entries) and what the
        restore will do, and what the rules leave alone. Changes nothing."""
        from svirt.security.manager import SecurityManager

        return SecurityManager(self.config).plan_domain(self.definition(xml, inactive=None))

    def restore_labels(self, name: str, fallback: XMLSource | None = None) -> RestoreResult:
        """``svirt restore``: restore what ``label`` set on domain ``name`` (its record,
        else ``fallback``'s XML, live or not) and release its labels; returns what
        happened to each resource and the paths that could not be restored."""
        from svirt.security.manager import RestoreResult, SecurityManager

        domain = self.definition(fallback, inactive=None) if fallback is not None else None
        _released, result = SecurityManager(self.config).restore_domain(name, fallback=domain)
        return RestoreResult(tuple(result.report), tuple(str(e) for _, e in result.errors))


class Domain:
    """A handle on one domain of a :class:`Host`. Properties read the current record."""

    def __init__(self, host: Host, name: str) -> None:
        self.host = host
        self.name = name

    def __repr__(self) -> str:
        return f"<svirt.Domain {self.name!r}>"

    def _record(self) -> DomainRecord:
        from svirt.security.manager import SecurityManager

        rec = SecurityManager(self.host.config).store.read(self.name)
        if rec is None:
            raise LaunchError(f"failed to get domain '{self.name}'")
        return rec

    @property
    def definition(self) -> DomainDefinition:
        """The live definition, with the generated seclabels."""
        return self._record().domain

    @property
    def xml(self) -> str:
        """The live XML (libvirt's status form, as ``svirt dumpxml`` prints it)."""
        return format_domain(self.definition, live=True)

    @property
    def labels(self) -> Labels:
        from svirt.host import selinux as host_selinux

        return _labels_of(self.definition, host_selinux.is_enabled())

    @property
    def pid(self) -> int | None:
        return self._record().pid

    @property
    def state(self) -> str:
        return str(self._record().state)

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

    def attach_disk(self, disk: str | bytes | os.PathLike[str] | Disk) -> HotplugResult:
        """Hotplug a disk given as ``<disk>`` XML text, a path to it, or a parsed Disk;
        returns the new definition and what happened to each of its files."""
        from svirt.launch.lifecycle import attach

        if not isinstance(disk, Disk):
            if isinstance(disk, bytes) or (isinstance(disk, str) and disk.lstrip().startswith("<")):
                disk = parse_disk(disk)
            else:
                path = Path(disk)
                try:
                    data = path.read_bytes()[: 1 << 20]
                except OSError as exc:
                    raise SvirtError(
                        f"cannot read disk XML: {exc.strerror}", source=str(path)
                    ) from None
                disk = parse_disk(data, source=str(path))
        return attach(self.host.config, self.name, disk)

    def detach_disk(self, target: str) -> HotplugResult:
        """Hot-unplug the disk with this target (``vdb``) and restore its labels; returns
        the new definition and what the restore did to each of its files."""
        from svirt.launch.lifecycle import detach

        return detach(self.host.config, self.name, target)

    def disks(self) -> Sequence[Disk]:
        """The domain's disks as it runs (``svirt domblklist``)."""
        return self.definition.disks
