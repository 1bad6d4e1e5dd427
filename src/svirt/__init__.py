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
from svirt.domain.model import Disk
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
    from svirt.doctor import DoctorReport, RecoverReport
    from svirt.domain.resources import Resource, domain_resources
    from svirt.host.fileinfo import FileLabels
    from svirt.launch.lifecycle import StartResult
    from svirt.launch.listing import DomainStatus
    from svirt.security.driver import Action, LabelOp
    from svirt.security.manager import PlannedOp
    from svirt.security.transaction import TransactionResult

__version__ = "0.1.0"

# The types the API's methods return, imported on first use (PEP 562) so that `import
# svirt` stays light (a `svirt ls -Z` does not load QEMU, policy or doctor code).
_LAZY = {
    "Action": "svirt.security.driver",
    "DoctorReport": "svirt.doctor",
    "DomainStatus": "svirt.launch.listing",
    "FileLabels": "svirt.host.fileinfo",
    "LabelOp": "svirt.security.driver",
    "PlannedOp": "svirt.security.manager",
    "RecoverReport": "svirt.doctor",
    "Resource": "svirt.domain.resources",
    "StartResult": "svirt.launch.lifecycle",
    "TransactionResult": "svirt.security.transaction",
    "domain_resources": "svirt.domain.resources",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'svirt' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "API_VERSION",
    "Action",
    "AuditError",
    "Config",
    "ConfigError",
    "ContextError",
    "Disk",
    "DoctorReport",
    "Domain",
    "DomainDefinition",
    "DomainStatus",
    "FileLabels",
    "Host",
    "LabelOp",
    "LabelSystemError",
    "Labels",
    "LaunchError",
    "OperationInvalid",
    "PlannedOp",
    "PolicyError",
    "RecoverReport",
    "Resource",
    "SecurityError",
    "StartResult",
    "StateError",
    "SvirtError",
    "TransactionResult",
    "XMLError",
    "__version__",
    "boot_time",
    "config_from_mapping",
    "domain_resources",
    "file_labels",
    "load_config",
]
