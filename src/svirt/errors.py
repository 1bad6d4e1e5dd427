"""The svirt exception tree.

Every error svirt raises on purpose derives from :class:`SvirtError`; concrete errors
also subclass the builtin they mean, so ``except ValueError`` keeps working::

    SvirtError
    ├── ContextError(ValueError)          a malformed or out-of-range security context
    ├── ConfigError(ValueError)           svirt.conf: unknown key, wrong type, bad value
    ├── XMLError(ValueError)              domain XML: malformed, hostile, or libvirt-invalid
    ├── SecurityError                     the security drivers (label generation, labelling)
    │   ├── OperationInvalid              libvirt's VIR_ERR_OPERATION_INVALID
    │   └── LabelSystemError(OSError)     a system call on a resource failed
    ├── StateError                        the runtime state database
    ├── LaunchError                       starting or stopping QEMU
    ├── AuditError                        reading audit logs
    └── PolicyError                       loading or querying the binary policy

Messages follow libvirt's texts where libvirt has one for the same situation, with the
same prefix libvirt prints for its error code (``XML error: ``, ``unsupported
configuration: ``, ...), so a user can search for them.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "ConfigError",
    "ContextError",
    "LabelSystemError",
    "LaunchError",
    "OperationInvalid",
    "PolicyError",
    "SecurityError",
    "StateError",
    "SvirtError",
    "XMLError",
]

# libvirt's printed prefixes for its error codes (virerror.c), used in messages.
PREFIX_XML_ERROR = "XML error: "
PREFIX_XML_DETAIL = "XML error: "
PREFIX_CONFIG_UNSUPPORTED = "unsupported configuration: "
PREFIX_INTERNAL = "internal error: "
PREFIX_OPERATION_INVALID = "Requested operation is not valid: "
PREFIX_INVALID_ARG = "invalid argument: "
PREFIX_CONF_SYNTAX = "configuration file syntax error: "


class SvirtError(Exception):
    """Root of every error svirt raises on purpose.

    ``source`` names the file (or other input) the error is about; the CLI prints
    ``<source>: <message>`` on one line.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def __str__(self) -> str:
        if self.source:
            return f"{self.source}: {self.message}"
        return self.message

    def with_source(self, source: str) -> SvirtError:
        """Attach the input's name if none is set yet; returns self for ``raise``."""
        if self.source is None:
            self.source = source
        return self


class ContextError(SvirtError, ValueError):
    """A security context, level, range or category set is malformed or out of bounds."""


class ConfigError(SvirtError, ValueError):
    """svirt.conf is unreadable or has an unknown key, a wrong type, or a bad value."""


class XMLError(SvirtError, ValueError):
    """Domain XML is malformed, hostile (entities), or violates libvirt's rules."""


class SecurityError(SvirtError):
    """A security driver refused or failed an operation."""


class OperationInvalid(SecurityError):
    """libvirt's VIR_ERR_OPERATION_INVALID (e.g. a label already in use)."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(PREFIX_OPERATION_INVALID + message, source=source)


class LabelSystemError(SecurityError, OSError):
    """A system call on a labelled resource failed; carries the errno."""

    def __init__(self, message: str, errno_: int | None, *, source: str | None = None) -> None:
        SecurityError.__init__(self, message, source=source)
        self.errno = errno_ or 0


class StateError(SvirtError):
    """The runtime state (domains, MCS ledger, journal) is unusable."""


class LaunchError(SvirtError):
    """Starting, stopping or talking to a QEMU process failed."""


class AuditError(SvirtError):
    """An audit log cannot be read."""


class PolicyError(SvirtError):
    """The binary SELinux policy cannot be loaded or queried."""
