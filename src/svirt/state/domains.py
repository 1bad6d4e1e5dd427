"""Domain records: one live XML file per domain svirt has labelled or started.

``<state_dir>/domains/<name>.xml`` holds libvirt's status form, as libvirt keeps
``/run/libvirt/qemu/<name>.xml``, so every tool that reads one reads the other::

    <domstatus state='running' pid='1234' svirt-owner='5678'>
      <domain type='kvm' id='1'> … generated <seclabel>s … </domain>
    </domstatus>

``state`` is ``labelling`` (a ``svirt label`` in progress), ``labelled``, ``starting``,
``running`` or ``stopping``; ``svirt-owner`` is the pid of the svirt process (or monitor)
responsible for the record, so a record whose owner died can be reconciled.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import defusedxml.ElementTree as DET

from svirt.domain.format import format_domain
from svirt.domain.model import Domain
from svirt.domain.parse import parse_domain
from svirt.errors import StateError, SvirtError
from svirt.state.db import fsync_dir

__all__ = ["DomainRecord", "DomainStore"]

_NAME = re.compile(r"^[^/\0]{1,255}$")


@dataclass(frozen=True, slots=True)
class DomainRecord:
    domain: Domain
    state: str
    pid: int | None  # QEMU's pid when running
    owner: int | None  # svirt process or monitor responsible for the record
    path: Path
    pending: tuple[str, ...] = ()  # restore-failed: the paths still to restore


class DomainStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "domains"

    def path(self, name: str) -> Path:
        if not _NAME.match(name) or name in (".", ".."):
            raise StateError(f"invalid domain name '{name}'")
        return self.dir / f"{name}.xml"

    def write(
        self,
        domain: Domain,
        state: str,
        *,
        pid: int | None = None,
        owner: int | None = None,
        pending: Sequence[str] = (),
    ) -> Path:
        """Write the record atomically (temporary file, fsync, rename)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(domain.name)
        attrs = f" state='{state}'"
        if pid is not None:
            attrs += f" pid='{pid}'"
        attrs += f" svirt-owner='{owner if owner is not None else os.getpid()}'"
        body = format_domain(domain, live=True)
        text = f"<domstatus{attrs}>\n"
        if pending:
            text += "  <restore-pending>\n"
            text += "".join(f"    <path>{escape(p)}</path>\n" for p in pending)
            text += "  </restore-pending>\n"
        text += "".join(f"  {ln}\n" for ln in body.splitlines())
        text += "</domstatus>\n"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(self.dir)
        return target

    def read(self, name: str) -> DomainRecord | None:
        p = self.path(name)
        if not p.exists():
            return None
        return self._read(p)

    def _read(self, p: Path) -> DomainRecord:
        try:
            data = p.read_bytes()
            root: ET.Element = DET.fromstring(data, forbid_dtd=True)
            domain = parse_domain(data, inactive=False, source=str(p))
        except (OSError, ET.ParseError, SvirtError) as exc:
            raise StateError(f"unreadable domain record: {exc}", source=str(p)) from None
        pid = root.get("pid")
        owner = root.get("svirt-owner")
        return DomainRecord(
            domain,
            root.get("state", "running"),
            int(pid) if pid and pid.isdigit() else None,
            int(owner) if owner and owner.isdigit() else None,
            p,
            tuple(e.text or "" for e in root.findall("restore-pending/path")),
        )

    def remove(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def records(self) -> Iterator[DomainRecord]:
        if not self.dir.is_dir():
            return
        for p in sorted(self.dir.glob("*.xml")):
            try:
                yield self._read(p)
            except StateError:
                if p.exists():
                    raise  # removed meanwhile by another svirt process: not an error

    def next_id(self) -> int:
        ids = [r.domain.id for r in self.records() if r.domain.id is not None]
        return max(ids, default=0) + 1
