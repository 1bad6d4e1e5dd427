"""svirt: sVirt for Python — SELinux MCS isolation of QEMU virtual machines.

The public API is what this package exports (see ``docs/api.md``): :class:`Host`,
:class:`Domain`, the error hierarchy, the types their methods return, and the
:mod:`svirt.audit` and :mod:`svirt.policy` entry points. The names in ``__all__`` are
stable within a major :data:`API_VERSION`; every other module is internal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from svirt.api import API_VERSION, Domain, DomainDefinition, Host, Labels, boot_time, file_labels
from svirt.conf import Config, config_from_mapping, load_config
from svirt.domain.model import (
    Chardev,
    ChardevKind,
    DeviceSeclabel,
    Disk,
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
    AuditError,
    ConfigError,
    ContextError,
    LabelSystemError,
    LaunchError,
    OperationInvalid,
    PolicyError,
    SecurityError,
    StateError,
    SvirtError,
    XMLError,
)

if TYPE_CHECKING:
    from svirt.advice import Fix
    from svirt.context import Level
    from svirt.doctor import (
        DoctorReport,
        DomainUse,
        FileFacts,
        Finding,
        Holder,
        RecoverAction,
        RecoverReport,
        RepairKind,
    )
    from svirt.doctor import Kind as FindingKind
    from svirt.domain.blklist import BlockDevice
    from svirt.domain.resources import Resource, ResourceKind, domain_resources
    from svirt.host.fileinfo import FileLabels
    from svirt.host.remembered import Remembered
    from svirt.launch.lifecycle import HotplugResult, StartResult, StopResult
    from svirt.launch.listing import DomainStatus
    from svirt.security.driver import Action, LabelOp, Left, Outcome, Preview
    from svirt.security.manager import LabelResult, Plan, PlannedOp, RestoreReport
    from svirt.security.report import ResourceOutcome
    from svirt.security.transaction import TransactionResult

__version__ = "0.1.0"

# The types the API's methods return (and the types of their fields), imported on first
# use (PEP 562) so that `import svirt` stays light (a `svirt ls -Z` does not load QEMU,
# policy or doctor code). A value is the defining module, or "module:name" where the
# public name differs from the internal one.
_LAZY = {
    "Action": "svirt.security.driver",
    "BlockDevice": "svirt.domain.blklist",
    "DoctorReport": "svirt.doctor",
    "DomainStatus": "svirt.launch.listing",
    "DomainUse": "svirt.doctor",
    "FileFacts": "svirt.doctor",
    "FileLabels": "svirt.host.fileinfo",
    "Finding": "svirt.doctor",
    "FindingKind": "svirt.doctor:Kind",
    "Fix": "svirt.advice",
    "Holder": "svirt.doctor",
    "HotplugResult": "svirt.launch.lifecycle",
    "LabelOp": "svirt.security.driver",
    "LabelResult": "svirt.security.manager",
    "Left": "svirt.security.driver",
    "Level": "svirt.context",
    "Outcome": "svirt.security.driver",
    "Plan": "svirt.security.manager",
    "PlannedOp": "svirt.security.manager",
    "Preview": "svirt.security.driver",
    "RecoverAction": "svirt.doctor",
    "RecoverReport": "svirt.doctor",
    "Remembered": "svirt.host.remembered",
    "RepairKind": "svirt.doctor",
    "Resource": "svirt.domain.resources",
    "ResourceKind": "svirt.domain.resources",
    "ResourceOutcome": "svirt.security.report",
    "RestoreReport": "svirt.security.manager",
    "StartResult": "svirt.launch.lifecycle",
    "StopResult": "svirt.launch.lifecycle",
    "TransactionResult": "svirt.security.transaction",
    "domain_resources": "svirt.domain.resources",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'svirt' has no attribute '{name}'")
    module, _, attr = where.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


__all__ = [
    "API_VERSION",
    "Action",
    "AuditError",
    "BlockDevice",
    "Chardev",
    "ChardevKind",
    "Config",
    "ConfigError",
    "ContextError",
    "DeviceSeclabel",
    "Disk",
    "DoctorReport",
    "Domain",
    "DomainDefinition",
    "DomainStatus",
    "DomainUse",
    "FileFacts",
    "FileLabels",
    "Filesystem",
    "Finding",
    "FindingKind",
    "Fix",
    "Holder",
    "Host",
    "Hostdev",
    "HotplugResult",
    "Input",
    "LabelOp",
    "LabelResult",
    "LabelSystemError",
    "Labels",
    "LaunchError",
    "Left",
    "Level",
    "Loader",
    "MemoryDevice",
    "OSConfig",
    "OperationInvalid",
    "Outcome",
    "Plan",
    "PlannedOp",
    "PolicyError",
    "Preview",
    "RecoverAction",
    "RecoverReport",
    "Remembered",
    "RepairKind",
    "Resource",
    "ResourceKind",
    "ResourceOutcome",
    "RestoreReport",
    "Seclabel",
    "SeclabelType",
    "SecurityError",
    "StartResult",
    "StateError",
    "StopResult",
    "StorageSource",
    "SvirtError",
    "Tpm",
    "TransactionResult",
    "XMLError",
    "__version__",
    "boot_time",
    "config_from_mapping",
    "domain_resources",
    "file_labels",
    "load_config",
]
