"""Format domain XML back out, with seclabels in libvirt's form (spec §2.1 "Format").

The output keeps everything of the original document that the model leaves out: the
original tree is re-read, its domain-level ``<seclabel>`` elements are replaced by the
model's, and the per-source seclabels of disks are rewritten from the model. Output uses
libvirt's layout: single-quoted attributes, two-space indentation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

import defusedxml.ElementTree as DET

from svirt.domain.model import (
    DeviceSeclabel,
    Disk,
    Domain,
    Seclabel,
    SeclabelType,
    StorageSource,
)

__all__ = [
    "disk_element",
    "format_device_seclabel",
    "format_domain",
    "format_seclabel",
    "seclabel_element",
]


def seclabel_element(sl: Seclabel) -> ET.Element:
    el = ET.Element("seclabel", {"type": sl.type.value})
    if sl.model is not None:
        el.set("model", sl.model)
    if sl.type is SeclabelType.NONE:
        return el
    el.set("relabel", "optional" if sl.relabel_optional else ("yes" if sl.relabel else "no"))
    if sl.label is not None:
        ET.SubElement(el, "label").text = sl.label
    if sl.imagelabel is not None and sl.relabel:
        ET.SubElement(el, "imagelabel").text = sl.imagelabel
    if sl.baselabel is not None and sl.type is SeclabelType.DYNAMIC:
        ET.SubElement(el, "baselabel").text = sl.baselabel
    return el


def _device_seclabel_element(sl: DeviceSeclabel) -> ET.Element:
    el = ET.Element("seclabel")
    if sl.model is not None:
        el.set("model", sl.model)
    if sl.labelskip:
        el.set("labelskip", "yes")
    elif sl.relabel_optional:
        el.set("relabel", "optional")
    else:
        el.set("relabel", "yes" if sl.relabel else "no")
    if sl.label is not None:
        ET.SubElement(el, "label").text = sl.label
    return el


_SOURCE_ATTR = {"file": "file", "block": "dev", "dir": "dir"}


def _source_element(src: StorageSource) -> ET.Element:
    el = ET.Element("source")
    attr = _SOURCE_ATTR.get(src.type)
    if attr is not None and src.path is not None:
        el.set(attr, src.path)
    if src.protocol is not None:
        el.set("protocol", src.protocol)
    if src.name is not None:
        el.set("volume" if src.type == "volume" else "name", src.name)
    if src.pool is not None:
        el.set("pool", src.pool)
    for sl in src.seclabels:
        el.append(_device_seclabel_element(sl))
    return el


def disk_element(disk: Disk) -> ET.Element:
    """A ``<disk>`` element from the model (for disks that have no original XML)."""
    top = disk.source
    el = ET.Element("disk", {"type": top.type if top else "file", "device": disk.device})
    if disk.driver_name or disk.driver_type:
        drv = ET.SubElement(el, "driver")
        if disk.driver_name:
            drv.set("name", disk.driver_name)
        if disk.driver_type:
            drv.set("type", disk.driver_type)
    if top is not None:
        el.append(_source_element(top))
        parent = el
        for layer in list(top.chain())[1:]:
            bs = ET.SubElement(parent, "backingStore", {"type": layer.type})
            if layer.format:
                ET.SubElement(bs, "format", {"type": layer.format})
            bs.append(_source_element(layer))
            parent = bs
    target = ET.SubElement(el, "target", {"dev": disk.target})
    if disk.bus:
        target.set("bus", disk.bus)
    if disk.readonly:
        ET.SubElement(el, "readonly")
    if disk.shareable:
        ET.SubElement(el, "shareable")
    return el


def _escape(text: str, quote: bool) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if not quote:
        return text
    # In an attribute, a raw newline, tab or CR is normalised to a space by every XML
    # parser: written as character references they survive the round trip (issue 11:
    # a disk path with a newline was mangled and never restored).
    text = text.replace("\n", "&#10;").replace("\t", "&#9;").replace("\r", "&#13;")
    return text.replace("'", "&apos;")


def _serialize(el: ET.Element, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    attrs = "".join(f" {k}='{_escape(v, True)}'" for k, v in el.attrib.items())
    children = list(el)
    text = (el.text or "").strip()
    if not children and not text:
        out.append(f"{pad}<{el.tag}{attrs}/>")
    elif not children:
        out.append(f"{pad}<{el.tag}{attrs}>{_escape(text, False)}</{el.tag}>")
    else:
        out.append(f"{pad}<{el.tag}{attrs}>")
        for child in children:
            _serialize(child, indent + 1, out)
        out.append(f"{pad}</{el.tag}>")


def _to_string(el: ET.Element) -> str:
    out: list[str] = []
    _serialize(el, 0, out)
    return "\n".join(out) + "\n"


def format_seclabel(sl: Seclabel) -> str:
    return _to_string(seclabel_element(sl))


def format_device_seclabel(sl: DeviceSeclabel) -> str:
    return _to_string(_device_seclabel_element(sl))


def _keep_device_seclabel(sl: DeviceSeclabel, inactive: bool) -> bool:
    # INACTIVE output skips a device seclabel with no label and relabel=yes.
    return not (inactive and sl.label is None and sl.relabel and not sl.relabel_optional)


def _replace_source_seclabels(
    src_el: ET.Element | None, labels: Iterable[DeviceSeclabel], inactive: bool
) -> None:
    if src_el is None:
        return
    for old in src_el.findall("seclabel"):
        src_el.remove(old)
    for sl in labels:
        if _keep_device_seclabel(sl, inactive):
            src_el.append(_device_seclabel_element(sl))


def format_domain(domain: Domain, *, live: bool = True, migratable: bool = False) -> str:
    """The domain as XML with the model's seclabels.

    ``live=True`` prints what ``virsh dumpxml`` prints for a running domain (``id``,
    generated labels); ``live=False`` the inactive definition. ``migratable`` omits
    implicit dac/none seclabels, as libvirt does.
    """
    root = DET.fromstring(domain.xml, forbid_dtd=True) if domain.xml else ET.Element("domain")
    dom = root.find("domain") if root.tag == "domstatus" else root
    if dom is None:  # pragma: no cover - parse_domain refused such documents
        raise ValueError("no <domain> element")
    dom.set("type", domain.type)
    if live and domain.id is not None:
        dom.set("id", str(domain.id))
    elif not live:
        dom.attrib.pop("id", None)
    if dom.find("name") is None:
        ET.SubElement(dom, "name").text = domain.name
    for old in dom.findall("seclabel"):
        dom.remove(old)
    for sl in domain.seclabels:
        if migratable and sl.implicit and sl.model in ("dac", "none"):
            continue
        dom.append(seclabel_element(sl))
    devices = dom.find("devices")
    if devices is None:
        devices = ET.SubElement(dom, "devices")
    # Disks: keep the original element of each disk still in the model (it carries what
    # the model leaves out), drop unplugged ones, append hotplugged ones from the model.
    by_target = {}
    for el in devices.findall("disk"):
        target = el.find("target")
        by_target[target.get("dev") if target is not None else None] = el
        devices.remove(el)
    for disk in domain.disks:
        disk_el = by_target.get(disk.target)
        if disk_el is None:
            devices.append(disk_element(disk))
            continue
        devices.append(disk_el)
        if disk.source is None:
            continue
        if disk.source.type == "network":
            # libvirt parses network-source seclabels but never formats them back.
            _replace_source_seclabels(disk_el.find("source"), (), not live)
            continue
        _replace_source_seclabels(disk_el.find("source"), disk.source.seclabels, not live)
    for el in root.iter():
        if el.tail is not None and not el.tail.strip():
            el.tail = None
    return _to_string(dom)
