"""svirt: sVirt for Python — SELinux MCS isolation of QEMU virtual machines.

The public API is what this package exports (see ``docs/api.md``): :class:`Host`,
:class:`Domain`, the error hierarchy, and the :mod:`svirt.audit` and :mod:`svirt.policy`
entry points.
"""

from svirt.api import API_VERSION, Domain, DomainDefinition, Host, Labels
from svirt.conf import Config, load_config
from svirt.errors import (
    AuditError,
    ConfigError,
    ContextError,
    LaunchError,
    PolicyError,
    SecurityError,
    StateError,
    SvirtError,
    XMLError,
)

__version__ = "0.1.0"

__all__ = [
    "API_VERSION",
    "AuditError",
    "Config",
    "ConfigError",
    "ContextError",
    "Domain",
    "DomainDefinition",
    "Host",
    "Labels",
    "LaunchError",
    "PolicyError",
    "SecurityError",
    "StateError",
    "SvirtError",
    "XMLError",
    "__version__",
    "load_config",
]
