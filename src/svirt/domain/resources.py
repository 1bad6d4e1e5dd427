"""The resources of a domain that security drivers label (pure).

This walks the model in the order libvirt's SELinux driver labels
(libvirt-security-spec §5.2): disks (each chain element), hostdevs, inputs, memory
devices, TPMs, chardevs, nvram, kernel, initrd, dtb, ACPI tables. What label each gets is
the drivers' business; this only says what exists, where, and with which flags.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from svirt.domain.model import Chardev, DeviceSeclabel, Disk, Domain, Hostdev, StorageSource

__all__ = [
    "BOOT_FILES",
    "Resource",
    "ResourceKind",
    "chardev_resource",
    "disk_resources",
    "domain_resources",
]


class ResourceKind(enum.Enum):
    DISK = "disk"  # top of a disk's chain
    BACKING = "backing"  # a backing layer
    NVRAM = "nvram"
    KERNEL = "kernel"
    INITRD = "initrd"
    DTB = "dtb"
    ACPI_TABLE = "acpi-table"
    CHARDEV = "chardev"
    HOSTDEV = "hostdev"
    INPUT = "input"
    MEMORY = "memory"
    TPM = "tpm"


# Files QEMU only reads to boot: labelled as content, remembered, restored.
BOOT_FILES = frozenset(
    {ResourceKind.KERNEL, ResourceKind.INITRD, ResourceKind.DTB, ResourceKind.ACPI_TABLE}
)


@dataclass(frozen=True, slots=True)
class Resource:
    """One labellable object of a domain.

    ``seclabels`` are the element's own per-source seclabels; ``parent_seclabels`` those
    of the top of its disk chain (they apply to every layer, spec §5.1).
    """

    kind: ResourceKind
    path: str | None
    owner: str  # what the user calls it: "disk vda", "serial 0", "hostdev 0000:06:02.0"
    readonly: bool = False
    shareable: bool = False
    chain_top: bool = True
    local: bool = True
    storage_type: str | None = None  # disk chain elements: file, block, dir, network, ...
    chardev_type: str | None = None  # file, pipe, dev, unix, ...
    chardev_mode: str | None = None  # unix: bind or connect
    hostdev: Hostdev | None = None
    seclabels: tuple[DeviceSeclabel, ...] = ()
    parent_seclabels: tuple[DeviceSeclabel, ...] = ()

    def seclabel(self, model: str) -> DeviceSeclabel | None:
        for s in self.seclabels:
            if s.model == model:
                return s
        return None

    def parent_seclabel(self, model: str) -> DeviceSeclabel | None:
        for s in self.parent_seclabels:
            if s.model == model:
                return s
        return None

    @property
    def flags(self) -> tuple[str, ...]:
        names = []
        if self.readonly:
            names.append("readonly")
        if self.shareable:
            names.append("shareable")
        if not self.chain_top:
            names.append("backing")
        if not self.local:
            names.append("not-local")
        return tuple(names)


def disk_resources(disk: Disk) -> Iterator[Resource]:
    """Every element of a disk's chain, top first."""
    if disk.source is None:
        return
    top: StorageSource = disk.source
    for depth, src in enumerate(top.chain()):
        yield Resource(
            kind=ResourceKind.DISK if depth == 0 else ResourceKind.BACKING,
            path=src.path,
            owner=f"disk {disk.target}" if depth == 0 else f"disk {disk.target} layer {depth}",
            readonly=disk.readonly if depth == 0 else True,
            shareable=disk.shareable if depth == 0 else False,
            chain_top=depth == 0,
            local=src.is_local,
            storage_type=src.type,
            seclabels=src.seclabels,
            parent_seclabels=top.seclabels,
        )


def _hostdev_name(h: Hostdev) -> str:
    if h.type == "usb":
        if h.usb_path is not None:
            return f"hostdev usb {h.usb_bus:03d}/{h.usb_device:03d}"
        return f"hostdev usb {h.usb_vendor or 0:04x}:{h.usb_product or 0:04x}"
    if h.type == "pci":
        return f"hostdev pci {h.pci_address}"
    if h.type == "scsi":
        return f"hostdev scsi {h.scsi_adapter}:{h.scsi_bus}:{h.scsi_target}:{h.scsi_unit}"
    if h.type == "scsi_host":
        return f"hostdev scsi_host {h.wwpn}"
    if h.type == "mdev":
        return f"hostdev mdev {h.mdev_uuid}"
    return f"hostdev {h.type} {h.path}"


def _hostdev_path(h: Hostdev) -> str | None:
    """The path known from the XML alone; PCI/mdev/SCSI paths need sysfs (host/)."""
    if h.type == "usb":
        return h.usb_path
    if h.mode == "capabilities":
        return h.path
    return None


def chardev_resource(ch: Chardev, index: int) -> Resource:
    if ch.target_name:
        name = f"{ch.kind.value} {ch.target_name}"
    elif ch.target_port is not None:
        name = f"{ch.kind.value} {ch.target_port}"
    else:
        name = f"{ch.kind.value} #{index}"
    return Resource(
        kind=ResourceKind.CHARDEV,
        path=ch.path,
        owner=name,
        chardev_type=ch.type,
        chardev_mode=ch.mode,
        seclabels=ch.seclabels,
    )


def domain_resources(domain: Domain) -> Iterator[Resource]:
    """All labellable resources in libvirt's SELinux SetAllLabel order."""
    for disk in domain.disks:
        yield from disk_resources(disk)
    for h in domain.hostdevs:
        yield Resource(
            kind=ResourceKind.HOSTDEV,
            path=_hostdev_path(h),
            owner=_hostdev_name(h),
            readonly=h.readonly,
            shareable=h.shareable,
            hostdev=h,
        )
    for i, inp in enumerate(domain.inputs):
        if inp.type in ("passthrough", "evdev") and inp.path:
            yield Resource(kind=ResourceKind.INPUT, path=inp.path, owner=f"input #{i} {inp.type}")
    for i, mem in enumerate(domain.memory_devices):
        if mem.model in ("nvdimm", "virtio-pmem") and mem.path:
            yield Resource(
                kind=ResourceKind.MEMORY, path=mem.path, owner=f"memory #{i} {mem.model}"
            )
    for i, tpm in enumerate(domain.tpms):
        if tpm.backend == "passthrough" and tpm.device_path:
            yield Resource(kind=ResourceKind.TPM, path=tpm.device_path, owner=f"tpm #{i}")
    for i, ch in enumerate(domain.chardevs):
        if ch.type in ("file", "pipe", "dev", "unix") and ch.path:
            yield chardev_resource(ch, i)
    os_ = domain.os
    if os_.nvram:
        yield Resource(kind=ResourceKind.NVRAM, path=os_.nvram, owner="nvram")
    for kind, path in (
        (ResourceKind.KERNEL, os_.kernel),
        (ResourceKind.INITRD, os_.initrd),
        (ResourceKind.DTB, os_.dtb),
    ):
        if path:
            yield Resource(kind=kind, path=path, owner=kind.value)
    for path in os_.acpi_tables:
        yield Resource(kind=ResourceKind.ACPI_TABLE, path=path, owner="acpi table")
