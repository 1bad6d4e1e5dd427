"""The security view of a libvirt domain, as frozen dataclasses (pure).

Only what the security drivers, the namespace builder and the QEMU command line need is
modelled; unknown elements are ignored by the parser, not refused.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "Chardev",
    "ChardevKind",
    "DeviceSeclabel",
    "Disk",
    "Domain",
    "Filesystem",
    "Hostdev",
    "Input",
    "Loader",
    "MemoryDevice",
    "OSConfig",
    "Seclabel",
    "SeclabelType",
    "StorageSource",
    "Tpm",
]


class SeclabelType(enum.Enum):
    DYNAMIC = "dynamic"
    STATIC = "static"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Seclabel:
    """A domain-level ``<seclabel>`` (spec §2.1).

    ``implicit`` marks a label the manager generated because the XML had none for that
    driver (it is omitted from migratable output, as libvirt does). ``relabel_optional``
    is svirt's ``relabel='optional'`` at domain level: relabelling is on, and read-only and
    shareable media keep a label the policy already lets the VM use.
    """

    type: SeclabelType = SeclabelType.DYNAMIC
    model: str | None = None
    relabel: bool = True
    label: str | None = None
    imagelabel: str | None = None
    baselabel: str | None = None
    implicit: bool = False
    relabel_optional: bool = False  # svirt's relabel='optional' for the domain's media


@dataclass(frozen=True, slots=True)
class DeviceSeclabel:
    """A per-source ``<seclabel>`` (spec §2.2): disables relabelling or supplies a label.

    ``relabel_optional`` is svirt's ``relabel='optional'`` extension (the libvir-list
    RFC): for read-only and shareable media, keep the current label when the policy
    already lets the VM use it.
    """

    model: str | None = None
    relabel: bool = True
    label: str | None = None
    labelskip: bool = False
    relabel_optional: bool = False


@dataclass(frozen=True, slots=True)
class StorageSource:
    """A disk ``<source>`` or a ``<backingStore>`` element, with its chain below it."""

    type: str  # file, block, dir, network, volume, nvme
    path: str | None = None  # file=, dev=, dir= (None for network/volume)
    format: str | None = None  # driver type (raw, qcow2, ...) or backingStore <format>
    protocol: str | None = None  # network disks
    name: str | None = None  # network disk name / volume name
    pool: str | None = None  # volume disks
    seclabels: tuple[DeviceSeclabel, ...] = ()
    backing: StorageSource | None = None
    readonly: bool = False  # explicit backing stores are read-only, as libvirt marks them

    @property
    def is_local(self) -> bool:
        """Local storage as libvirt means it: a file or a block device."""
        return self.type in ("file", "block")

    def seclabel(self, model: str) -> DeviceSeclabel | None:
        for s in self.seclabels:
            if s.model == model:
                return s
        return None

    def chain(self) -> Iterator[StorageSource]:
        """This source, then each backing layer, top to bottom."""
        src: StorageSource | None = self
        while src is not None:
            yield src
            src = src.backing


@dataclass(frozen=True, slots=True)
class Disk:
    device: str  # disk, cdrom, floppy, lun
    target: str
    bus: str | None = None
    source: StorageSource | None = None
    readonly: bool = False
    shareable: bool = False
    driver_name: str | None = None
    driver_type: str | None = None

    @property
    def path(self) -> str | None:
        return self.source.path if self.source is not None else None


@dataclass(frozen=True, slots=True)
class Loader:
    path: str
    readonly: bool = False
    type: str | None = None  # rom, pflash


@dataclass(frozen=True, slots=True)
class OSConfig:
    type: str = "hvm"
    arch: str | None = None
    machine: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    dtb: str | None = None
    cmdline: str | None = None
    loader: Loader | None = None
    nvram: str | None = None
    nvram_template: str | None = None
    acpi_tables: tuple[str, ...] = ()


class ChardevKind(enum.Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"
    CHANNEL = "channel"
    CONSOLE = "console"


@dataclass(frozen=True, slots=True)
class Chardev:
    kind: ChardevKind
    type: str  # file, pipe, dev, unix, pty, null, tcp, udp, stdio, vc, spicevmc, ...
    path: str | None = None
    mode: str | None = None  # unix: bind or connect
    seclabels: tuple[DeviceSeclabel, ...] = ()
    target_type: str | None = None
    target_name: str | None = None
    target_port: int | None = None

    def seclabel(self, model: str) -> DeviceSeclabel | None:
        for s in self.seclabels:
            if s.model == model:
                return s
        return None


@dataclass(frozen=True, slots=True)
class Hostdev:
    mode: str  # subsystem, capabilities
    type: str  # usb, pci, scsi, scsi_host, mdev, storage, misc
    managed: bool = False
    missing: bool = False
    usb_bus: int | None = None
    usb_device: int | None = None
    usb_vendor: int | None = None
    usb_product: int | None = None
    pci_domain: int | None = None
    pci_bus: int | None = None
    pci_slot: int | None = None
    pci_function: int | None = None
    pci_driver: str | None = None  # vfio, kvm
    scsi_adapter: str | None = None
    scsi_bus: int | None = None
    scsi_target: int | None = None
    scsi_unit: int | None = None
    wwpn: str | None = None  # scsi_host (vhost-scsi)
    mdev_uuid: str | None = None
    readonly: bool = False
    shareable: bool = False
    path: str | None = None  # capabilities mode: <source><block>/<char>

    @property
    def usb_path(self) -> str | None:
        """``/dev/bus/usb/BBB/DDD`` when the bus and device are given."""
        if self.type != "usb" or self.usb_bus is None or self.usb_device is None:
            return None
        return f"/dev/bus/usb/{self.usb_bus:03d}/{self.usb_device:03d}"

    @property
    def pci_address(self) -> str | None:
        if self.type != "pci" or None in (self.pci_bus, self.pci_slot, self.pci_function):
            return None
        return (
            f"{self.pci_domain or 0:04x}:{self.pci_bus or 0:02x}:"
            f"{self.pci_slot or 0:02x}.{self.pci_function or 0:x}"
        )


@dataclass(frozen=True, slots=True)
class Tpm:
    model: str | None
    backend: str  # passthrough, emulator
    device_path: str | None = None  # passthrough <device path=>
    version: str | None = None


@dataclass(frozen=True, slots=True)
class MemoryDevice:
    model: str  # dimm, nvdimm, virtio-pmem, virtio-mem, sgx-epc
    path: str | None = None
    size_kib: int | None = None
    access: str | None = None


@dataclass(frozen=True, slots=True)
class Input:
    type: str  # mouse, keyboard, tablet, passthrough, evdev
    bus: str | None = None
    path: str | None = None  # evdev= (passthrough) or dev= (evdev)


@dataclass(frozen=True, slots=True)
class Filesystem:
    type: str  # mount, file, block, ram, ...
    source: str | None
    target: str | None
    accessmode: str | None = None
    driver: str | None = None  # path, virtiofs, ...
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class Domain:
    """The security-relevant part of a libvirt ``<domain>``."""

    type: str  # kvm, qemu, ...
    name: str
    uuid: str | None = None
    id: int | None = None
    memory_kib: int = 0
    vcpus: int = 1
    emulator: str | None = None
    seclabels: tuple[Seclabel, ...] = ()
    os: OSConfig = field(default_factory=OSConfig)
    disks: tuple[Disk, ...] = ()
    chardevs: tuple[Chardev, ...] = ()
    hostdevs: tuple[Hostdev, ...] = ()
    tpms: tuple[Tpm, ...] = ()
    memory_devices: tuple[MemoryDevice, ...] = ()
    inputs: tuple[Input, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    # The document the model came from, so formatting can keep what the model leaves out.
    xml: str = field(default="", repr=False, compare=False)

    def seclabel(self, model: str) -> Seclabel | None:
        for s in self.seclabels:
            if s.model == model:
                return s
        return None
