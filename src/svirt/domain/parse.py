"""Parse libvirt domain XML into the security model, with libvirt's rules and texts.

The XML is read with defusedxml: a DTD, an entity declaration or an external reference
is refused with an error (never expanded), and documents larger than
:data:`MAX_XML_BYTES` are refused before parsing, so hostile input costs bounded time
and memory.

``inactive=True`` is libvirt's persistent-config parse (``VIR_DOMAIN_DEF_PARSE_INACTIVE``);
``inactive=False`` is the live/status parse, where dynamic labels must carry their
``<label>`` and ``<imagelabel>``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as DET

from svirt.domain.model import (
    Chardev,
    ChardevKind,
    DeviceSeclabel,
    Disk,
    Domain,
    Filesystem,
    Hostdev,
    Input,
    Loader,
    MemoryDevice,
    OSConfig,
    Seclabel,
    SeclabelType,
    StorageSource,
    Tpm,
)
from svirt.errors import (
    PREFIX_CONFIG_UNSUPPORTED,
    PREFIX_XML_DETAIL,
    PREFIX_XML_ERROR,
    XMLError,
)

__all__ = ["MAX_NAME_BYTES", "MAX_XML_BYTES", "parse_disk", "parse_domain", "parse_domain_file"]

# virsh refuses XML files above 10 MiB; so do we, before any parsing.
MAX_XML_BYTES = 10 * 1024 * 1024
# Records are files named after the domain: keep room within NAME_MAX (255).
MAX_NAME_BYTES = 200
_MAX_MODEL_LEN = 256  # longer models are silently treated as absent (libvirt)
_MAX_LABEL_LEN = 4096  # VIR_SECURITY_LABEL_BUFLEN: longer labels are treated as missing

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_DISK_TYPES = ("file", "block", "dir", "network", "volume", "nvme", "vhostuser")
_CHARDEV_TYPES = (
    "null",
    "vc",
    "pty",
    "dev",
    "file",
    "pipe",
    "stdio",
    "udp",
    "tcp",
    "unix",
    "spicevmc",
    "spiceport",
    "nmdm",
    "qemu-vdagent",
    "dbus",
)
_MEMORY_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


def _err(message: str) -> XMLError:
    return XMLError(PREFIX_XML_ERROR + message)


def _invalid_attr(attr: str, element: str, value: str) -> XMLError:
    return _err(f"Invalid value for attribute '{attr}' in element '{element}': '{value}'.")


def _yes_no(el: ET.Element, attr: str) -> bool | None:
    value = el.get(attr)
    if value is None:
        return None
    if value in ("yes", "on"):
        return True
    if value in ("no", "off"):
        return False
    raise _invalid_attr(attr, el.tag, value)


def _int(el: ET.Element, attr: str) -> int | None:
    """libvirt's address integers: ``0x`` hex or decimal."""
    value = el.get(attr)
    if value is None:
        return None
    try:
        return int(value, 16) if value.lower().startswith("0x") else int(value, 10)
    except ValueError:
        raise _invalid_attr(attr, el.tag, value) from None


def _text(el: ET.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    text = el.text.strip()
    return text or None


# --- seclabels -------------------------------------------------------------------------


def _label_text(el: ET.Element, tag: str) -> str | None:
    """First ``<tag>`` child's text; longer than 4096 characters counts as missing."""
    text = _text(el.find(tag))
    if text is None or len(text) > _MAX_LABEL_LEN:
        return None
    return text


def _parse_seclabel(el: ET.Element, inactive: bool) -> Seclabel:
    """One domain-level <seclabel> (libvirt-security-spec §2.1, steps 1–9)."""
    type_attr = el.get("type")
    type_ = SeclabelType.DYNAMIC
    if type_attr is not None:
        try:
            type_ = SeclabelType(type_attr)
        except ValueError:
            raise _invalid_attr("type", "seclabel", type_attr) from None
    relabel = type_ is SeclabelType.DYNAMIC
    optional = el.get("relabel") == "optional"  # svirt's extension: relabel, but gently
    explicit = True if optional else _yes_no(el, "relabel")
    if explicit is not None:
        relabel = explicit
    if type_ is SeclabelType.DYNAMIC and not relabel:
        raise XMLError(
            PREFIX_CONFIG_UNSUPPORTED + "dynamic label type must use resource relabeling"
        )
    if type_ is SeclabelType.NONE and relabel:
        raise XMLError(
            PREFIX_CONFIG_UNSUPPORTED
            + "resource relabeling is not compatible with 'none' label type"
        )
    model = el.get("model")
    if model is not None and len(model) > _MAX_MODEL_LEN:
        model = None
    if model == "none":
        if inactive:
            return Seclabel(type=SeclabelType.NONE, model="none", relabel=False)
        if type_ is not SeclabelType.NONE:
            raise XMLError(
                PREFIX_CONFIG_UNSUPPORTED + f"unsupported type='{type_.value}' to model 'none'"
            )
        return Seclabel(type=SeclabelType.NONE, model="none", relabel=False)

    label = imagelabel = baselabel = None
    if type_ is SeclabelType.STATIC or (not inactive and type_ is not SeclabelType.NONE):
        label = _label_text(el, "label")
        if label is None:
            raise _err("security label is missing")
    if relabel and not inactive and type_ is not SeclabelType.NONE:
        imagelabel = _label_text(el, "imagelabel")
        if imagelabel is None:
            raise _err("security imagelabel is missing")
    if type_ is SeclabelType.DYNAMIC:
        baselabel = _label_text(el, "baselabel")  # too long: dropped silently
    return Seclabel(type_, model, relabel, label, imagelabel, baselabel, relabel_optional=optional)


def _parse_seclabels(
    root: ET.Element, inactive: bool, default_model: str | None
) -> tuple[Seclabel, ...]:
    labels: list[Seclabel] = []
    for el in root.findall("seclabel"):
        sl = _parse_seclabel(el, inactive)
        for prev in labels:
            if prev.model == sl.model:
                raise XMLError(
                    PREFIX_XML_DETAIL + f"seclabel for model {sl.model} is already provided"
                )
        labels.append(sl)
    if len(labels) == 1 and labels[0].model is None and default_model is not None:
        sl = labels[0]
        if sl.type is SeclabelType.NONE or (
            sl.type is SeclabelType.DYNAMIC and sl.baselabel is None and inactive
        ):
            if default_model == "none" and inactive:
                labels[0] = Seclabel(SeclabelType.NONE, "none", False)
            else:
                labels[0] = replace(sl, model=default_model)
        else:
            raise _err("missing security model in domain seclabel")
    elif len(labels) > 1 and any(sl.model is None for sl in labels):
        raise _err("missing security model when using multiple labels")
    return tuple(labels)


def _parse_device_seclabels(
    parent: ET.Element | None, inactive: bool
) -> tuple[DeviceSeclabel, ...]:
    """Per-source seclabels (spec §2.2), plus svirt's relabel='optional'."""
    if parent is None:
        return ()
    result: list[DeviceSeclabel] = []
    for el in parent.findall("seclabel"):
        model = el.get("model")
        if model is not None and len(model) > _MAX_MODEL_LEN:
            model = None
        relabel_attr = el.get("relabel")
        optional = relabel_attr == "optional"
        relabel = True if optional else _yes_no(el, "relabel")
        labelskip = False if inactive else bool(_yes_no(el, "labelskip"))
        label = _label_text(el, "label")
        shown = model if model is not None else "(null)"
        if label is not None and relabel is False:
            raise _err(f"Cannot specify a label if relabelling is turned off. model={shown}")
        if label is not None and optional:
            raise _err(f"Cannot specify a label with relabel='optional'. model={shown}")
        if inactive and relabel is True and not optional and label is None:
            raise _err(f"Cannot specify relabel if label is missing. model={shown}")
        if any(prev.model == model for prev in result):
            raise XMLError(PREFIX_XML_DETAIL + f"seclabel for model {model} is already provided")
        result.append(
            DeviceSeclabel(
                model=model,
                relabel=relabel is not False,
                label=label,
                labelskip=labelskip,
                relabel_optional=optional,
            )
        )
    return tuple(result)


# --- disks -----------------------------------------------------------------------------


def _source_path(type_: str, src: ET.Element) -> str | None:
    attr = {"file": "file", "block": "dev", "dir": "dir"}.get(type_)
    if attr is None:
        return None
    path = src.get(attr)
    return path or None


def _parse_source(
    type_: str, src: ET.Element | None, fmt: str | None, inactive: bool, readonly: bool
) -> StorageSource:
    if src is None:
        return StorageSource(type=type_, format=fmt, readonly=readonly)
    return StorageSource(
        type=type_,
        path=_source_path(type_, src),
        format=fmt,
        protocol=src.get("protocol"),
        name=src.get("name") or src.get("volume"),
        pool=src.get("pool"),
        seclabels=_parse_device_seclabels(src, inactive),
        readonly=readonly,
    )


def _parse_backing(el: ET.Element | None, inactive: bool, depth: int) -> StorageSource | None:
    """<backingStore type=...><format/><source/><backingStore/></backingStore>."""
    if el is None or el.get("type") is None:
        return None  # <backingStore/> ends the chain
    if depth > 200:
        raise _err("backing chain is too deep")
    type_ = el.get("type", "")
    if type_ not in _DISK_TYPES:
        raise _invalid_attr("type", "backingStore", type_)
    fmt_el = el.find("format")
    fmt = fmt_el.get("type") if fmt_el is not None else None
    src = _parse_source(type_, el.find("source"), fmt, inactive, readonly=True)
    backing = _parse_backing(el.find("backingStore"), inactive, depth + 1)
    return StorageSource(
        type=src.type,
        path=src.path,
        format=src.format,
        protocol=src.protocol,
        name=src.name,
        pool=src.pool,
        seclabels=src.seclabels,
        backing=backing,
        readonly=True,
    )


def _parse_disk(el: ET.Element, inactive: bool) -> Disk:
    type_ = el.get("type", "file")
    if type_ not in _DISK_TYPES:
        raise _invalid_attr("type", "disk", type_)
    device = el.get("device", "disk")
    if device not in ("disk", "cdrom", "floppy", "lun"):
        raise _invalid_attr("device", "disk", device)
    driver = el.find("driver")
    driver_type = driver.get("type") if driver is not None else None
    readonly = el.find("readonly") is not None
    shareable = el.find("shareable") is not None
    src_el = el.find("source")
    source = _parse_source(type_, src_el, driver_type, inactive, readonly=False)
    backing = _parse_backing(el.find("backingStore"), inactive, 1)
    source = StorageSource(
        type=source.type,
        path=source.path,
        format=source.format,
        protocol=source.protocol,
        name=source.name,
        pool=source.pool,
        seclabels=source.seclabels,
        backing=backing,
    )
    target_el = el.find("target")
    target = target_el.get("dev") if target_el is not None else None
    if not target:
        raise _err(f"missing target information for device {source.path or '(null)'}")
    for sl in source.seclabels:
        if sl.relabel_optional and not (readonly or shareable or device == "cdrom"):
            raise _err(
                f"relabel='optional' on disk {target} is refused: it applies to read-only or "
                "shareable media only, since skipping the per-VM label of a private writable "
                "disk would break isolation"
            )
    return Disk(
        device=device,
        target=target,
        bus=target_el.get("bus") if target_el is not None else None,
        source=source if (src_el is not None or backing is not None) else None,
        readonly=readonly or device == "cdrom",
        shareable=shareable,
        driver_name=driver.get("name") if driver is not None else None,
        driver_type=driver_type,
    )


# --- other devices ---------------------------------------------------------------------


def _parse_os(el: ET.Element | None) -> OSConfig:
    if el is None:
        return OSConfig()
    type_el = el.find("type")
    loader_el = el.find("loader")
    loader = None
    if loader_el is not None and _text(loader_el):
        loader = Loader(
            path=_text(loader_el) or "",
            readonly=bool(_yes_no(loader_el, "readonly")),
            type=loader_el.get("type"),
        )
    nvram_el = el.find("nvram")
    acpi = tuple(t for t in (_text(x) for x in el.findall("acpi/table")) if t)
    return OSConfig(
        type=_text(type_el) or "hvm",
        arch=type_el.get("arch") if type_el is not None else None,
        machine=type_el.get("machine") if type_el is not None else None,
        kernel=_text(el.find("kernel")),
        initrd=_text(el.find("initrd")),
        dtb=_text(el.find("dtb")),
        cmdline=_text(el.find("cmdline")),
        loader=loader,
        nvram=_text(nvram_el),
        nvram_template=nvram_el.get("template") if nvram_el is not None else None,
        acpi_tables=acpi,
    )


def _parse_chardev(el: ET.Element, kind: ChardevKind, inactive: bool) -> Chardev:
    type_ = el.get("type", "pty")
    if type_ not in _CHARDEV_TYPES:
        raise _invalid_attr("type", kind.value, type_)
    src = el.find("source")
    path = src.get("path") if src is not None else None
    mode = None
    if type_ == "unix":
        mode = (src.get("mode") if src is not None else None) or "connect"
        if mode not in ("bind", "connect"):
            raise _invalid_attr("mode", "source", mode)
    target = el.find("target")
    port = _int(target, "port") if target is not None else None
    return Chardev(
        kind=kind,
        type=type_,
        path=path or None,
        mode=mode,
        seclabels=_parse_device_seclabels(src, inactive),
        target_type=target.get("type") if target is not None else None,
        target_name=target.get("name") if target is not None else None,
        target_port=port,
    )


def _parse_hostdev(el: ET.Element) -> Hostdev:
    mode = el.get("mode", "subsystem")
    if mode not in ("subsystem", "capabilities"):
        raise _invalid_attr("mode", "hostdev", mode)
    type_ = el.get("type", "")
    valid = (
        ("usb", "pci", "scsi", "scsi_host", "mdev")
        if mode == "subsystem"
        else ("storage", "misc", "net")
    )
    if type_ not in valid:
        raise _invalid_attr("type", "hostdev", type_)
    src = el.find("source")
    src = src if src is not None else ET.Element("source")
    addr = src.find("address")
    kw: dict[str, object] = {}
    if type_ == "usb":
        vendor, product = src.find("vendor"), src.find("product")
        kw.update(
            usb_bus=_int(addr, "bus") if addr is not None else None,
            usb_device=_int(addr, "device") if addr is not None else None,
            usb_vendor=_int(vendor, "id") if vendor is not None else None,
            usb_product=_int(product, "id") if product is not None else None,
            missing=bool(_yes_no(src, "missing")),
        )
    elif type_ == "pci":
        driver = el.find("driver")
        kw.update(
            pci_domain=_int(addr, "domain") if addr is not None else None,
            pci_bus=_int(addr, "bus") if addr is not None else None,
            pci_slot=_int(addr, "slot") if addr is not None else None,
            pci_function=_int(addr, "function") if addr is not None else None,
            pci_driver=(driver.get("name") if driver is not None else None) or "vfio",
        )
    elif type_ == "scsi":
        adapter = src.find("adapter")
        kw.update(
            scsi_adapter=adapter.get("name") if adapter is not None else None,
            scsi_bus=_int(addr, "bus") if addr is not None else None,
            scsi_target=_int(addr, "target") if addr is not None else None,
            scsi_unit=_int(addr, "unit") if addr is not None else None,
        )
    elif type_ == "scsi_host":
        kw.update(wwpn=src.get("wwpn"))
    elif type_ == "mdev":
        kw.update(mdev_uuid=addr.get("uuid") if addr is not None else None)
    else:
        kw.update(path=_text(src.find("block")) or _text(src.find("char")))
    return Hostdev(
        mode=mode,
        type=type_,
        managed=bool(_yes_no(el, "managed")),
        readonly=el.find("readonly") is not None,
        shareable=el.find("shareable") is not None,
        **kw,  # type: ignore[arg-type]
    )


def _parse_tpm(el: ET.Element) -> Tpm:
    backend = el.find("backend")
    btype = backend.get("type", "") if backend is not None else ""
    if btype not in ("passthrough", "emulator", "external"):
        raise _invalid_attr("type", "backend", btype)
    device = backend.find("device") if backend is not None else None
    path = None
    if btype == "passthrough":
        path = (device.get("path") if device is not None else None) or "/dev/tpm0"
    return Tpm(
        model=el.get("model"),
        backend=btype,
        device_path=path,
        version=backend.get("version") if backend is not None else None,
    )


def _size_kib(el: ET.Element | None, where: str) -> int | None:
    if el is None or _text(el) is None:
        return None
    unit = (el.get("unit") or "KiB").lower()
    if unit not in _MEMORY_UNITS:
        raise _err(f"unknown unit '{el.get('unit')}' in {where}")
    try:
        value = int(_text(el) or "")
    except ValueError:
        raise _err(f"invalid value '{_text(el)}' in {where}") from None
    if value < 0:
        raise _err(f"invalid value '{value}' in {where}")
    return value * _MEMORY_UNITS[unit] // 1024


def _parse_memory_device(el: ET.Element) -> MemoryDevice:
    model = el.get("model", "")
    if model not in ("dimm", "nvdimm", "virtio-pmem", "virtio-mem", "sgx-epc"):
        raise _invalid_attr("model", "memory", model)
    return MemoryDevice(
        model=model,
        path=_text(el.find("source/path")),
        size_kib=_size_kib(el.find("target/size"), "memory device size"),
        access=el.get("access"),
    )


def _parse_input(el: ET.Element) -> Input:
    src = el.find("source")
    path = None
    if src is not None:
        path = src.get("evdev") or src.get("dev")
    return Input(type=el.get("type", ""), bus=el.get("bus"), path=path or None)


def _parse_filesystem(el: ET.Element) -> Filesystem:
    src, tgt, drv = el.find("source"), el.find("target"), el.find("driver")
    source = None
    if src is not None:
        source = src.get("dir") or src.get("file") or src.get("dev") or src.get("name")
    return Filesystem(
        type=el.get("type", "mount"),
        source=source,
        target=tgt.get("dir") if tgt is not None else None,
        accessmode=el.get("accessmode"),
        driver=drv.get("type") if drv is not None else None,
        readonly=el.find("readonly") is not None,
    )


# --- the document ----------------------------------------------------------------------


def _load_root(text: str | bytes) -> ET.Element:
    if len(text) > MAX_XML_BYTES:
        raise _err(f"document is {len(text)} bytes, larger than the {MAX_XML_BYTES}-byte limit")
    try:
        root: ET.Element = DET.fromstring(text, forbid_dtd=True)
    except defusedxml.DTDForbidden:
        raise _err("refusing XML with a DTD (entity declarations are not allowed)") from None
    except defusedxml.EntitiesForbidden as exc:
        raise _err(f"refusing XML entity declaration '{exc.name}'") from None
    except defusedxml.ExternalReferenceForbidden:
        raise _err("refusing XML external reference") from None
    except ET.ParseError as exc:
        raise _err(f"malformed XML: {exc}") from None
    except (LookupError, ValueError) as exc:  # e.g. an unknown encoding declaration
        raise _err(f"malformed XML: {exc}") from None
    _check_depth(root)
    return root


MAX_XML_DEPTH = 256  # libxml2's limit without XML_PARSE_HUGE, as libvirt parses


def _check_depth(root: ET.Element) -> None:
    """Refuse documents nested deeper than libxml2 accepts (issue 11: 1,100 nested
    elements made the recursive writer of the live XML fail with RecursionError)."""
    stack = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            raise _err(f"Excessive depth in document: {MAX_XML_DEPTH} use XML_PARSE_HUGE option")
        stack.extend((child, depth + 1) for child in el)


def _domain_element(root: ET.Element) -> tuple[ET.Element, bool]:
    """Return the <domain> element and whether the document is status XML."""
    if root.tag == "domstatus":
        dom = root.find("domain")
        if dom is None:
            raise _err("unexpected root element <domstatus> without <domain>")
        return dom, True
    if root.tag != "domain":
        raise _err(f"unexpected root element <{root.tag}>, expecting <domain>")
    return root, False


def parse_domain(
    text: str | bytes,
    *,
    inactive: bool | None = None,
    default_model: str | None = "selinux",
    source: str | None = None,
) -> Domain:
    """Parse domain (or ``<domstatus>``) XML.

    ``inactive=None`` picks the mode from the document: status XML (``<domstatus>``) and
    a ``<domain>`` with an ``id`` attribute (what ``virsh dumpxml`` prints for a running
    domain) are parsed live; anything else as a persistent definition.
    ``default_model`` is the host's primary security model, used by the whole-list rules.
    """
    try:
        root = _load_root(text)
        dom, status = _domain_element(root)
        if inactive is None:
            inactive = not (status or dom.get("id") is not None)
        return _parse_domain_element(dom, inactive, default_model, text)
    except XMLError as exc:
        if source is not None:
            exc.with_source(source)
        raise


def _parse_domain_element(
    dom: ET.Element, inactive: bool, default_model: str | None, text: str | bytes
) -> Domain:
    dtype = dom.get("type")
    if dtype is None:
        raise _err("Missing required attribute 'type' in element 'domain'")
    if not dtype:
        raise _invalid_attr("type", "domain", dtype)
    name = _text(dom.find("name"))
    if name is None:
        raise _err("missing name information")
    if "/" in name:
        raise _err(f"name {name} cannot contain '/'")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise _err(f"domain name is longer than {MAX_NAME_BYTES} bytes")
    uuid = _text(dom.find("uuid"))
    if uuid is not None and not _UUID.match(uuid):
        raise _err("malformed uuid element")
    dom_id = None
    if dom.get("id") is not None:
        dom_id = _int(dom, "id")
    memory = _size_kib(dom.find("memory"), "domain memory") or 0
    vcpu_text = _text(dom.find("vcpu"))
    try:
        vcpus = int(vcpu_text) if vcpu_text is not None else 1
    except ValueError:
        raise _err(f"maximum vcpus count must be an integer, not '{vcpu_text}'") from None
    if vcpus < 1:
        raise _err("Invalid number of vCPUs")

    devices = dom.find("devices")
    devices = devices if devices is not None else ET.Element("devices")
    chardevs: list[Chardev] = []
    for kind in ChardevKind:
        chardevs.extend(_parse_chardev(el, kind, inactive) for el in devices.findall(kind.value))
    disks = tuple(_parse_disk(el, inactive) for el in devices.findall("disk"))
    targets = [d.target for d in disks]
    for t in targets:
        if targets.count(t) > 1:
            raise _err(f"target '{t}' duplicated for disk sources")
    return Domain(
        type=dtype,
        name=name,
        uuid=uuid,
        id=dom_id,
        memory_kib=memory,
        vcpus=vcpus,
        emulator=_text(devices.find("emulator")),
        seclabels=_parse_seclabels(dom, inactive, default_model),
        os=_parse_os(dom.find("os")),
        disks=disks,
        chardevs=tuple(chardevs),
        hostdevs=tuple(_parse_hostdev(el) for el in devices.findall("hostdev")),
        tpms=tuple(_parse_tpm(el) for el in devices.findall("tpm")),
        memory_devices=tuple(_parse_memory_device(el) for el in devices.findall("memory")),
        inputs=tuple(_parse_input(el) for el in devices.findall("input")),
        filesystems=tuple(_parse_filesystem(el) for el in devices.findall("filesystem")),
        xml=text.decode("utf-8", "replace") if isinstance(text, bytes) else text,
    )


def _read_bounded(path: str | os.PathLike[str]) -> bytes:
    """Read a file, refusing it before reading when it exceeds MAX_XML_BYTES."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_XML_BYTES:
                raise XMLError(
                    PREFIX_XML_ERROR
                    + f"document is {size} bytes, larger than the {MAX_XML_BYTES}-byte limit",
                    source=str(p),
                )
            data = fh.read(MAX_XML_BYTES + 1)
    except IsADirectoryError:
        raise XMLError("cannot read domain XML: Is a directory", source=str(p)) from None
    except OSError as exc:
        raise XMLError(f"cannot read domain XML: {exc.strerror}", source=str(p)) from None
    if len(data) > MAX_XML_BYTES:  # a file that grew, or a pipe with no size
        raise XMLError(
            PREFIX_XML_ERROR + f"document is larger than the {MAX_XML_BYTES}-byte limit",
            source=str(p),
        )
    return data


def parse_domain_file(
    path: str | os.PathLike[str],
    *,
    inactive: bool | None = None,
    default_model: str | None = "selinux",
) -> Domain:
    """Read and parse a domain XML file; errors name the file."""
    return parse_domain(
        _read_bounded(path), inactive=inactive, default_model=default_model, source=str(path)
    )


def parse_disk(text: str | bytes, *, source: str | None = None, inactive: bool = True) -> Disk:
    """Parse a lone ``<disk>`` element (``svirt attach-disk``)."""
    try:
        root = _load_root(text)
        if root.tag != "disk":
            raise _err(f"unexpected root element <{root.tag}>, expecting <disk>")
        return _parse_disk(root, inactive)
    except XMLError as exc:
        if source is not None:
            exc.with_source(source)
        raise
