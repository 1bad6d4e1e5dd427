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

from svirt.domain.model import DeviceSeclabel, Domain, Seclabel, SeclabelType

__all__ = ["format_device_seclabel", "format_domain", "format_seclabel", "seclabel_element"]


def seclabel_element(sl: Seclabel) -> ET.Element:
    el = ET.Element("seclabel", {"type": sl.type.value})
    if sl.model is not None:
        el.set("model", sl.model)
    if sl.type is SeclabelType.NONE:
        return el
    el.set("relabel", "yes" if sl.relabel else "no")
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


def _escape(text: str, quote: bool) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("'", "&apos;") if quote else text


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
    if devices is not None:
        for disk_el, disk in zip(devices.findall("disk"), domain.disks, strict=False):
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
