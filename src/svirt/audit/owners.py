"""Which running VM owns a category set: the live domain XML of svirt and of libvirt.

Running domains are described by status XML (``<domstatus state='running' pid='N'>``
around the ``<domain>``, with the generated ``<seclabel>``): svirt writes
``<state_dir>/domains/NAME.xml``, libvirt ``/run/libvirt/qemu/NAME.xml``. A process
label ``svirt_t:s0:c392,c662`` or an image label ``svirt_image_t:s0:c392,c662`` names
the VM whose label has exactly those categories. Files that do not parse are skipped
(logged at debug level): a half-written status file must not stop a diagnosis.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import defusedxml.ElementTree as DET

from svirt.context import Level, SecurityContext
from svirt.domain import parse_domain
from svirt.domain.parse import MAX_XML_BYTES
from svirt.errors import ContextError, SvirtError

__all__ = [
    "LiveDomain",
    "domain_of_pid",
    "live_domain_files",
    "load_live_domains",
    "owners_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveDomain:
    """A running domain as its live XML describes it."""

    name: str
    origin: str  # "svirt" or "libvirt"
    source: Path
    pid: int | None
    label: str | None
    imagelabel: str | None
    seclabel_type: str | None
    relabel: bool | None
    disks: tuple[str, ...]

    @property
    def level(self) -> Level | None:
        """The process label's (low) level, or None without an MLS label."""
        if self.label is None:
            return None
        try:
            return SecurityContext.parse(self.label).level
        except ContextError:
            return None

    @property
    def categories(self) -> frozenset[int] | None:
        level = self.level
        return None if level is None else level.categories


def live_domain_files(state_dir: Path, libvirt_run_dir: Path) -> list[tuple[str, Path]]:
    """(origin, path) of every live XML file, svirt's first."""
    out: list[tuple[str, Path]] = []
    for origin, directory in (("svirt", state_dir / "domains"), ("libvirt", libvirt_run_dir)):
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        out.extend((origin, directory / n) for n in names if n.endswith(".xml"))
    return out


def _load(origin: str, path: Path) -> LiveDomain | None:
    try:
        if path.stat().st_size > MAX_XML_BYTES:
            log.debug("skipping %s: larger than %d bytes", path, MAX_XML_BYTES)
            return None
        text = path.read_bytes()
        domain = parse_domain(text, inactive=False, source=str(path))
        root = DET.fromstring(text, forbid_dtd=True)
    except (OSError, SvirtError, ValueError, SyntaxError) as exc:
        log.debug("skipping live XML %s: %s", path, exc)
        return None
    pid: int | None = None
    if root.tag == "domstatus":
        raw = root.get("pid")
        if raw is not None and raw.isdigit():
            pid = int(raw)
    sl = domain.seclabel("selinux")
    disks: list[str] = []
    for disk in domain.disks:
        if disk.source is None:
            continue
        disks.extend(src.path for src in disk.source.chain() if src.path)
    return LiveDomain(
        name=domain.name,
        origin=origin,
        source=path,
        pid=pid,
        label=sl.label if sl is not None else None,
        imagelabel=sl.imagelabel if sl is not None else None,
        seclabel_type=sl.type.value if sl is not None else None,
        relabel=sl.relabel if sl is not None else None,
        disks=tuple(disks),
    )


def load_live_domains(state_dir: Path, libvirt_run_dir: Path) -> list[LiveDomain]:
    """Every running domain svirt and libvirt describe; unreadable files are skipped."""
    out: list[LiveDomain] = []
    for origin, path in live_domain_files(state_dir, libvirt_run_dir):
        dom = _load(origin, path)
        if dom is not None:
            out.append(dom)
    return out


def _as_categories(target: Level | frozenset[int] | str) -> frozenset[int] | None:
    if isinstance(target, frozenset):
        return target
    if isinstance(target, Level):
        return target.categories
    try:
        level = SecurityContext.parse(target).level
    except ContextError:
        try:
            level = Level.parse(target)
        except ContextError:
            return None
    return None if level is None else level.categories


def owners_of(
    target: Level | frozenset[int] | str, domains: Iterable[LiveDomain]
) -> list[LiveDomain]:
    """Domains whose label has exactly these categories (a context, level or set).

    No categories means no owner: ``s0`` is what shared and read-only resources carry.
    """
    cats = _as_categories(target)
    if not cats:
        return []
    return [d for d in domains if d.categories == cats]


def domain_of_pid(pid: int, domains: Sequence[LiveDomain]) -> LiveDomain | None:
    for d in domains:
        if d.pid == pid:
            return d
    return None
