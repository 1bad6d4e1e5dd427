"""The block devices of a domain as ``virsh domblklist`` lists them.

virsh reads the domain's XML, not a driver's model, and so does this: one
:class:`BlockDevice` per ``<devices><disk>`` in document order, the source being the
first of the ``<source>`` attributes ``file``, ``dev``, ``dir``, ``name``, ``volume``,
``path`` in document order (an empty one counts as none), and an NVMe disk's source
``nvme://DDDD:BB:SS.F/NAMESPACE`` from its PCI address (libvirt's
tools/virsh-domain-monitor.c, cmdDomblklist). Working on the XML keeps what the model
drops (the ``type`` of a drive without media) and lets the same code read libvirt's own
status XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import defusedxml.ElementTree as DET

from svirt.errors import XMLError

__all__ = ["BlockDevice", "block_devices"]

# The attributes virsh's XPath union reads, any of which names the source.
_SOURCE_ATTRS = frozenset({"file", "dev", "dir", "name", "volume", "path"})


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """One disk of a domain: ``type`` (file, block, network, ...), ``device`` (disk,
    cdrom, floppy, lun), ``target`` (vda) and ``source`` (None for a drive without
    media or a source virsh prints as ``-``)."""

    type: str
    device: str
    target: str
    source: str | None


def _nvme_source(source: ET.Element | None, target: str) -> str:
    namespace = source.get("namespace") if source is not None else None
    addr = source.find("address") if source is not None else None
    if not namespace or addr is None:
        raise XMLError(f"Unable to query NVMe disk address of disk {target}")
    try:
        parts = [int(addr.get(k) or "0", 0) for k in ("domain", "bus", "slot", "function")]
    except ValueError:
        raise XMLError(f"Unable to query NVMe disk address of disk {target}") from None
    domain, bus, slot, function = parts
    return f"nvme://{domain:04x}:{bus:02x}:{slot:02x}.{function}/{namespace}"


def _source(source: ET.Element | None) -> str | None:
    if source is None:
        return None
    for name, value in source.attrib.items():
        if name in _SOURCE_ATTRS:
            return value or None  # virXPathString: an empty string is no string
    return None


def block_devices(xml: str | bytes) -> list[BlockDevice]:
    """The disks of a domain XML document (``<domain>``, or libvirt's ``<domstatus>``)."""
    try:
        root = DET.fromstring(xml, forbid_dtd=True)
    except ET.ParseError as exc:
        raise XMLError(f"XML error: {exc}") from None
    dom = root.find("domain") if root.tag == "domstatus" else root
    if dom is None or dom.tag != "domain":
        raise XMLError("XML error: expecting a <domain> document")
    result = []
    for disk in dom.findall("./devices/disk"):
        target_el = disk.find("target")
        target = target_el.get("dev") if target_el is not None else None
        if not target:
            raise XMLError("unable to query block list")
        # libvirt formats both attributes of every disk; a definition svirt keeps as
        # written may omit them, and then libvirt's defaults are what libvirt would print.
        type_ = disk.get("type") or "file"
        device = disk.get("device") or "disk"
        source_el = disk.find("source")
        source = _nvme_source(source_el, target) if type_ == "nvme" else _source(source_el)
        result.append(BlockDevice(type=type_, device=device, target=target, source=source))
    return result
