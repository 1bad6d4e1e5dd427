"""Host device paths derived from sysfs: VFIO groups, SCSI generic nodes, TPM cancel files.

``sysfs`` is a parameter so tests can point at a directory of their own.
"""

from __future__ import annotations

import os
from pathlib import Path

from svirt.domain.model import Hostdev
from svirt.domain.resources import Resource
from svirt.errors import SecurityError

__all__ = ["chardev_paths", "hostdev_paths", "tpm_cancel_path"]

SYSFS = Path("/sys")


def _not_found(name: str, path: Path) -> SecurityError:
    return SecurityError(f"Device {name} not found: could not access {path}")


def _iommu_group(device_dir: Path, name: str) -> str:
    link = device_dir / "iommu_group"
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        raise _not_found(name, link) from None


def hostdev_paths(h: Hostdev, sysfs: Path = SYSFS) -> list[str]:
    """The device files a hostdev gives QEMU (libvirt-security-spec §5.2)."""
    if h.missing:
        return []
    if h.mode == "capabilities":
        return [h.path] if h.path else []
    if h.type == "usb":
        return [h.usb_path] if h.usb_path else []
    if h.type == "pci" and h.pci_address:
        if h.pci_driver == "kvm":
            # Legacy KVM assignment: QEMU opens the device's sysfs files.
            d = sysfs / "bus" / "pci" / "devices" / h.pci_address
            if not d.exists():
                raise _not_found(h.pci_address, d)
            return [str(d / n) for n in ("config", "resource", "rom") if (d / n).exists()]
        group = _iommu_group(sysfs / "bus" / "pci" / "devices" / h.pci_address, h.pci_address)
        return [f"/dev/vfio/{group}"]
    if h.type == "mdev" and h.mdev_uuid:
        group = _iommu_group(sysfs / "bus" / "mdev" / "devices" / h.mdev_uuid, h.mdev_uuid)
        return [f"/dev/vfio/{group}"]
    if h.type == "scsi" and h.scsi_adapter:
        host = h.scsi_adapter.removeprefix("scsi_host")
        name = f"{host}:{h.scsi_bus or 0}:{h.scsi_target or 0}:{h.scsi_unit or 0}"
        sg_dir = sysfs / "bus" / "scsi" / "devices" / name / "scsi_generic"
        try:
            return [f"/dev/{n}" for n in sorted(os.listdir(sg_dir))[:1]]
        except OSError:
            raise _not_found(name, sg_dir) from None
    if h.type == "scsi_host":
        return ["/dev/vhost-scsi"]
    return []


def tpm_cancel_path(device: str, sysfs: Path = SYSFS) -> str:
    """The sysfs ``cancel`` file of a passthrough TPM (``/dev/tpm0`` → …/tpm0/device/cancel).
    Not finding it is an error, as in libvirt."""
    name = os.path.basename(device)
    for cls in ("tpm", "misc"):
        p = sysfs / "class" / cls / name / "device" / "cancel"
        if p.exists():
            return str(p)
    raise SecurityError(f"No usable TPM cancel path for device {device}")


def chardev_paths(res: Resource) -> list[str]:
    """The files a chardev source stands for (spec §5.2): a pipe's ``.in``/``.out`` pair
    when both exist, else the path; a listening unix socket only once it exists."""
    assert res.path is not None
    if res.chardev_type == "pipe":
        pin, pout = res.path + ".in", res.path + ".out"
        if os.path.exists(pin) and os.path.exists(pout):
            return [pin, pout]
        return [res.path]
    if res.chardev_type == "unix" and res.chardev_mode == "bind":
        return [res.path] if os.path.exists(res.path) else []
    return [res.path]
