"""The QEMU command line for a domain (pure, apart from the ``/dev/kvm`` probe).

The shape follows what libvirt 9.0 generates, so a libvirt user can read it: ``-nodefaults
-no-user-config``, the monitor on a ``-chardev socket`` with ``-mon``, disks as two
``-blockdev`` nodes per chain element (a protocol node ``file``/``host_device`` with
``auto-read-only`` and a format node carrying ``read-only``) plus a ``-device`` frontend,
JSON for ``-blockdev``/``-device`` (no comma escaping to get wrong), and the seccomp
sandbox on. svirt starts the guest running by default: every security step (labels,
private ``/dev``, identity, exec context) happens before exec, so there is nothing to do
between QEMU's start and the guest's, which libvirt's ``-S`` + ``cont`` exists for.

Node names and device ids are derived from the disk target (``svirt-vda-0-format``,
libvirt's alias ``virtio-disk0``), so the same dictionaries serve as ``-blockdev`` /
``-device`` arguments at start and as ``blockdev-add`` / ``device_add`` arguments for
hotplug (:func:`disk_blockdevs`, :func:`disk_device`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from svirt.domain.model import Chardev, ChardevKind, Disk, Domain, StorageSource
from svirt.errors import PREFIX_CONFIG_UNSUPPORTED, PREFIX_INTERNAL, LaunchError
from svirt.host.ids import Identity

__all__ = [
    "DEFAULT_QEMU_BINARY",
    "SANDBOX",
    "QemuCommand",
    "build_command",
    "disk_blockdevs",
    "disk_device",
    "disk_device_id",
    "disk_index",
    "disk_node_name",
    "kvm_usable",
    "qemu_escape",
]

DEFAULT_QEMU_BINARY = "qemu-system-x86_64"
# libvirt's seccomp_sandbox=1 spelling: every optional syscall group denied.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

# QEMU format drivers a disk may name; anything else (notably protocol drivers such as
# "file", "host_device" or "nbd") is refused instead of being passed to QEMU.
_FORMATS = {
    "raw": "raw",
    "iso": "raw",
    "qcow2": "qcow2",
    "qcow": "qcow",
    "qed": "qed",
    "vmdk": "vmdk",
    "vdi": "vdi",
    "vpc": "vpc",
    "vhdx": "vhdx",
    "luks": "luks",
    "bochs": "bochs",
    "cloop": "cloop",
    "dmg": "dmg",
    "parallels": "parallels",
}
# Formats that can have a backing file: only these accept (and need) "backing": null.
_BACKING_FORMATS = frozenset({"qcow2", "qcow", "qed", "vmdk"})
_TARGET = re.compile(r"^(xvd|ubd|hd|sd|vd|fd)([a-z]+)$")
_KVM_GET_API_VERSION = 0xAE00
_KVM_API_VERSION = 12


@dataclass(frozen=True, slots=True)
class QemuCommand:
    """A command line and what was decided while building it.

    ``notes`` are facts the caller should show or log (e.g. a KVM domain falling back to
    TCG); they never change what the domain can reach.
    """

    argv: tuple[str, ...]
    accel: str  # "kvm" or "tcg"
    notes: tuple[str, ...] = ()


def _unsupported(message: str) -> LaunchError:
    return LaunchError(PREFIX_CONFIG_UNSUPPORTED + message)


def qemu_escape(value: str) -> str:
    """QEMU's option syntax: a literal comma in a value is written twice."""
    return value.replace(",", ",,")


_escape = qemu_escape


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- disks -------------------------------------------------------------------------------


def disk_index(target: str) -> int:
    """libvirt's ``virDiskNameToIndex``: ``vda`` → 0, ``vdz`` → 25, ``vdaa`` → 26."""
    m = _TARGET.match(target)
    if m is None:
        raise LaunchError(f"{PREFIX_INTERNAL}Unknown disk name '{target}' and no address specified")
    idx = 0
    for ch in m.group(2):
        idx = idx * 26 + (ord(ch) - ord("a") + 1)
    return idx - 1


def _is_q35(machine: str) -> bool:
    return "q35" in machine


def _node_prefix(disk: Disk) -> str:
    disk_index(disk.target)  # validates the target: node names must be identifiers
    return f"svirt-{disk.target}"


def disk_node_name(disk: Disk, depth: int = 0) -> str:
    """The format node of chain element ``depth`` (0 is the top, the device's drive)."""
    return f"{_node_prefix(disk)}-{depth}-format"


def _format_driver(src: StorageSource, disk: Disk, depth: int) -> str:
    name = src.format or (disk.driver_type if depth == 0 else None) or "raw"
    driver = _FORMATS.get(name)
    if driver is None:
        raise _unsupported(f"storage format '{name}' of disk {disk.target} is not supported")
    return driver


def disk_blockdevs(disk: Disk) -> list[dict[str, Any]]:
    """The ``-blockdev`` (or ``blockdev-add``) nodes of a disk, bottom layer first.

    Every chain element gets a protocol node and a format node. Backing layers and
    read-only disks have ``read-only`` format nodes; protocol nodes use
    ``auto-read-only`` so QEMU opens the file read-only unless a writer needs it. A
    chain described in the XML is passed explicitly and its last layer, when its format
    can have a backing file, gets ``backing: null``, so QEMU opens nothing the labelling
    did not see; a disk without
    ``<backingStore>`` lets QEMU follow the image header itself. An empty drive
    (cdrom without media) has no nodes.
    """
    if disk.source is None:
        return []
    if disk.source.is_local and disk.source.path is None and disk.source.backing is None:
        return []  # <source/> with no file: an empty removable drive
    prefix = _node_prefix(disk)
    chain = list(disk.source.chain())
    explicit = len(chain) > 1
    nodes: list[dict[str, Any]] = []
    for depth in reversed(range(len(chain))):
        src = chain[depth]
        if not src.is_local or src.path is None:
            raise _unsupported(f"disk type '{src.type}' of disk {disk.target} is not supported")
        protocol = "file"
        if src.type == "block":
            protocol = "host_cdrom" if disk.device == "cdrom" else "host_device"
        storage = f"{prefix}-{depth}-storage"
        nodes.append(
            {
                "driver": protocol,
                "filename": src.path,
                "node-name": storage,
                "auto-read-only": True,
                "discard": "unmap",
            }
        )
        fmt: dict[str, Any] = {
            "node-name": f"{prefix}-{depth}-format",
            "read-only": depth > 0 or disk.readonly,
            "driver": _format_driver(src, disk, depth),
            "file": storage,
        }
        if depth + 1 < len(chain):
            fmt["backing"] = f"{prefix}-{depth + 1}-format"
        elif explicit and fmt["driver"] in _BACKING_FORMATS:
            fmt["backing"] = None
        nodes.append(fmt)
    return nodes


def disk_device_id(disk: Disk) -> str:
    """libvirt's alias for the disk's frontend (``virtio-disk0``, ``ide0-1-0``,
    ``sata0-0-2``, ``scsi0-0-0-3``); the id for ``device_del``."""
    idx = disk_index(disk.target)
    bus = disk.bus or _default_bus(disk.target)
    if bus == "virtio":
        return f"virtio-disk{idx}"
    if bus == "ide":
        return f"ide0-{idx // 2}-{idx % 2}"
    if bus == "sata":
        return f"sata0-0-{idx}"
    if bus == "scsi":
        return f"scsi0-0-0-{idx}"
    raise _unsupported(f"disk bus '{bus}' of disk {disk.target} is not supported")


def _default_bus(target: str) -> str:
    # libvirt's virDomainDiskDefAssignAddress defaults by target prefix.
    if target.startswith("vd"):
        return "virtio"
    if target.startswith("sd"):
        return "scsi"
    if target.startswith("hd"):
        return "ide"
    return target[:2]


def disk_device(disk: Disk, machine: str = "pc") -> dict[str, Any]:
    """The ``-device`` (or ``device_add``) frontend of a disk.

    ``scsi`` disks sit on the ``scsi0`` virtio-scsi controller, ``sata`` disks on the
    q35 built-in AHCI (``ide.N``) or, on ``pc``, on the ``sata0`` AHCI controller that
    :func:`build_command` adds. Shareable disks get ``share-rw`` as in libvirt.
    """
    idx = disk_index(disk.target)
    bus = disk.bus or _default_bus(disk.target)
    cdrom = disk.device == "cdrom"
    if disk.device not in ("disk", "cdrom"):
        raise _unsupported(f"disk device '{disk.device}' of disk {disk.target} is not supported")
    dev: dict[str, Any]
    if bus == "virtio":
        if cdrom:
            raise _unsupported(f"disk type of '{disk.target}' does not support ejectable media")
        dev = {"driver": "virtio-blk-pci"}
    elif bus == "ide":
        if _is_q35(machine):
            raise _unsupported(
                "IDE controllers are unsupported for this QEMU binary or machine type"
            )
        if disk.readonly and not cdrom:
            raise _unsupported("readonly ide disks are not supported")
        if idx >= 4:
            raise _unsupported(f"disk {disk.target} is beyond the two IDE buses")
        dev = {"driver": "ide-cd" if cdrom else "ide-hd", "bus": f"ide.{idx // 2}", "unit": idx % 2}
    elif bus == "sata":
        if disk.readonly and not cdrom:
            raise _unsupported("readonly sata disks are not supported")
        if idx >= 6:
            raise _unsupported(f"disk {disk.target} is beyond the six SATA ports")
        port = f"ide.{idx}" if _is_q35(machine) else f"sata0.{idx}"
        dev = {"driver": "ide-cd" if cdrom else "ide-hd", "bus": port}
    elif bus == "scsi":
        dev = {
            "driver": "scsi-cd" if cdrom else "scsi-hd",
            "bus": "scsi0.0",
            "channel": 0,
            "scsi-id": 0,
            "lun": idx,
        }
    else:
        raise _unsupported(f"disk bus '{bus}' of disk {disk.target} is not supported")
    if disk_blockdevs(disk):
        dev["drive"] = disk_node_name(disk)
    dev["id"] = disk_device_id(disk)
    if disk.shareable:
        dev["share-rw"] = True
    return dev


# --- character devices -------------------------------------------------------------------


def _chardev_backend(ch: Chardev, char_id: str) -> str:
    t = ch.type
    if t in ("null", "pty", "vc"):
        return f"{t},id={char_id}"
    if t not in ("file", "pipe", "dev", "unix"):
        raise _unsupported(f"{ch.kind.value} of type '{t}' is not supported by svirt")
    if ch.path is None:
        raise _unsupported(f"{ch.kind.value} of type '{t}' needs a source path")
    path = _escape(ch.path)
    if t == "file":
        return f"file,id={char_id},path={path}"
    if t == "pipe":
        return f"pipe,id={char_id},path={path}"
    if t == "dev":
        backend = "parport" if ch.kind is ChardevKind.PARALLEL else "tty"
        return f"{backend},id={char_id},path={path}"
    server = "server=on,wait=off" if ch.mode == "bind" else "server=off"
    return f"socket,id={char_id},path={path},{server}"


@dataclass(slots=True)
class _Controllers:
    scsi: bool = False
    virtio_serial: bool = False
    sata: bool = False


def _chardev_args(domain: Domain, controllers: _Controllers) -> list[str]:
    args: list[str] = []
    counters: dict[ChardevKind, int] = dict.fromkeys(ChardevKind, 0)
    serials = [c for c in domain.chardevs if c.kind is ChardevKind.SERIAL]
    for ch in domain.chardevs:
        n = counters[ch.kind]
        counters[ch.kind] += 1
        alias = f"{ch.kind.value}{n}"
        dev: dict[str, Any]
        if ch.kind is ChardevKind.CONSOLE and ch.target_type in (None, "serial"):
            if serials and n == 0:
                continue  # libvirt: the first serial console is an alias of serial0
            dev = {"driver": "isa-serial", "index": len(serials) + n}
        elif ch.kind is ChardevKind.CONSOLE and ch.target_type == "virtio":
            controllers.virtio_serial = True
            dev = {"driver": "virtconsole", "bus": "virtio-serial0.0"}
        elif ch.kind is ChardevKind.CONSOLE:
            raise _unsupported(f"console target type '{ch.target_type}' is not supported")
        elif ch.kind is ChardevKind.SERIAL:
            port = ch.target_port if ch.target_port is not None else n
            if ch.target_type in (None, "isa-serial"):
                dev = {"driver": "isa-serial", "index": port}
            elif ch.target_type == "pci-serial":
                dev = {"driver": "pci-serial"}
            else:
                raise _unsupported(f"serial target type '{ch.target_type}' is not supported")
        elif ch.kind is ChardevKind.PARALLEL:
            dev = {"driver": "isa-parallel", "index": n}
        else:
            if ch.target_type != "virtio":
                raise _unsupported(f"channel target type '{ch.target_type}' is not supported")
            controllers.virtio_serial = True
            dev = {"driver": "virtserialport", "bus": "virtio-serial0.0"}
            if ch.target_name:
                dev["name"] = ch.target_name
        char_id = f"char{alias}"
        args += ["-chardev", _chardev_backend(ch, char_id)]
        args += ["-device", _json({**dev, "chardev": char_id, "id": alias})]
    return args


# --- the whole command line --------------------------------------------------------------


def _accel(domain: Domain, kvm_available: bool, binary: str) -> tuple[str, tuple[str, ...]]:
    if domain.type == "qemu":
        return "tcg", ()
    if domain.type == "kvm":
        if kvm_available:
            return "kvm", ()
        return "tcg", (
            "domain type 'kvm': /dev/kvm is not usable by the QEMU user here; "
            "running under TCG emulation",
        )
    raise _unsupported(f"Emulator '{binary}' does not support virt type '{domain.type}'")


def build_command(
    domain: Domain,
    *,
    qmp_socket: str | os.PathLike[str] | None = None,
    qmp_fd: int | None = None,
    binary: str = DEFAULT_QEMU_BINARY,
    kvm_available: bool = False,
    start_paused: bool = False,
) -> QemuCommand:
    """The QEMU argv for ``domain``.

    The QMP monitor is either a listening socket already bound by the caller and passed
    to QEMU as ``qmp_fd`` (what libvirt does: the socket belongs to root, not to the
    QEMU user, and a client can connect before QEMU is up), or a ``qmp_socket`` path
    that QEMU creates (its directory must be writable by the QEMU user). Exactly one
    must be given. ``kvm_available`` is the result of :func:`kvm_usable` for the QEMU
    user; a ``kvm`` domain without it runs under TCG, with a note.
    Raises :class:`LaunchError` (``unsupported configuration: ...``) for devices svirt
    cannot express.
    """
    if (qmp_socket is None) == (qmp_fd is None):
        raise ValueError("build_command needs exactly one of qmp_socket and qmp_fd")
    accel, notes = _accel(domain, kvm_available, binary)
    machine = domain.os.machine or "pc"
    # process= names the main thread (PR_SET_NAME): ps and top show qemu:NAME, cut by the
    # kernel to 15 bytes (TASK_COMM_LEN); the command line keeps guest=NAME in full.
    name = _escape(domain.name)
    argv: list[str] = [binary, "-name", f"guest={name},process=qemu:{name},debug-threads=on"]
    if start_paused:
        argv.append("-S")
    argv += ["-machine", f"{_escape(machine)},usb=off,dump-guest-core=off", "-accel", accel]
    if domain.memory_kib > 0:
        argv += ["-m", f"size={domain.memory_kib}k"]
    argv += ["-overcommit", "mem-lock=off"]
    argv += ["-smp", f"{domain.vcpus},sockets={domain.vcpus},cores=1,threads=1"]
    if domain.uuid:
        argv += ["-uuid", domain.uuid]
    argv += ["-no-user-config", "-nodefaults"]
    if qmp_fd is not None:
        monitor = f"socket,id=charmonitor,fd={qmp_fd},server=on,wait=off"
    else:
        monitor = f"socket,id=charmonitor,path={_escape(os.fspath(qmp_socket or ''))}"
        monitor += ",server=on,wait=off"
    argv += ["-chardev", monitor, "-mon", "chardev=charmonitor,id=monitor,mode=control"]
    argv += ["-rtc", "base=utc", "-boot", "strict=on"]

    os_ = domain.os
    if os_.loader is not None:
        if os_.loader.type not in (None, "rom"):
            raise _unsupported(f"loader type '{os_.loader.type}' is not supported by svirt")
        argv += ["-bios", os_.loader.path]
    if not os_.kernel and (os_.initrd or os_.cmdline or os_.dtb):
        # QEMU would refuse it after start-up; say so before anything is labelled.
        raise _unsupported("an initrd, a kernel command line or a dtb needs a <kernel>")
    if os_.kernel:
        argv += ["-kernel", os_.kernel]
    if os_.initrd:
        argv += ["-initrd", os_.initrd]
    if os_.cmdline:
        argv += ["-append", os_.cmdline]
    if os_.dtb:
        argv += ["-dtb", os_.dtb]
    for table in os_.acpi_tables:
        argv += ["-acpitable", f"file={_escape(table)}"]

    controllers = _Controllers()
    disk_args: list[str] = []
    for disk in domain.disks:
        device = disk_device(disk, machine)
        bus = disk.bus or _default_bus(disk.target)
        controllers.scsi |= bus == "scsi"
        controllers.sata |= bus == "sata" and not _is_q35(machine)
        for node in disk_blockdevs(disk):
            disk_args += ["-blockdev", _json(node)]
        disk_args += ["-device", _json(device)]
    chardev_args = _chardev_args(domain, controllers)
    if controllers.sata:
        argv += ["-device", _json({"driver": "ich9-ahci", "id": "sata0"})]
    if controllers.scsi:
        argv += ["-device", _json({"driver": "virtio-scsi-pci", "id": "scsi0"})]
    if controllers.virtio_serial:
        argv += ["-device", _json({"driver": "virtio-serial-pci", "id": "virtio-serial0"})]
    argv += disk_args
    argv += chardev_args
    argv += ["-display", "none", "-sandbox", SANDBOX, "-msg", "timestamp=on"]
    return QemuCommand(argv=tuple(argv), accel=accel, notes=notes)


# --- host probe --------------------------------------------------------------------------


def _dac_allows_rw(st: os.stat_result, identity: Identity) -> bool:
    if identity.uid == 0:
        return True
    mode = st.st_mode
    if st.st_uid == identity.uid:
        return mode & 0o600 == 0o600
    if st.st_gid in identity.groups or st.st_gid == identity.gid:
        return mode & 0o060 == 0o060
    return mode & 0o006 == 0o006


def kvm_usable(identity: Identity | None = None, path: str = "/dev/kvm") -> bool:
    """True when ``path`` is a working KVM device that ``identity`` may open read-write.

    The permission check reads the mode bits (the private ``/dev`` copies the host's
    owner and mode); the KVM API version is asked with our own (root) descriptor. A
    POSIX ACL granting access is not considered: the answer errs towards TCG.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISCHR(st.st_mode):
        return False
    if identity is not None and not _dac_allows_rw(st, identity):
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _KVM_GET_API_VERSION) == _KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)
