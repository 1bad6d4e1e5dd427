"""libvirt domain XML: the security model, its parser and its formatter."""

from svirt.domain.format import format_domain, format_seclabel
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
from svirt.domain.parse import MAX_XML_BYTES, parse_disk, parse_domain, parse_domain_file

__all__ = [
    "MAX_XML_BYTES",
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
    "format_domain",
    "format_seclabel",
    "parse_disk",
    "parse_domain",
    "parse_domain_file",
]
