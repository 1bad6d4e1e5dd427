"""Host security policy: which drivers are stacked, and checks of a domain against them.

libvirt wraps the configured drivers in a stack: every driver named in
``security_driver`` (or the first that probes as enabled: selinux, then none), then
``dac`` last for the privileged daemon (libvirt-security-spec §1, §9.1). svirt always
runs privileged, so ``dac`` is always stacked.

Unlike libvirt, naming ``selinux`` explicitly turns it on where the kernel has SELinux
off: labels are written for real and the process label is recorded, not enforced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from svirt.conf import Config
from svirt.context import SecurityContext
from svirt.domain.model import DeviceSeclabel, Domain, SeclabelType
from svirt.errors import (
    PREFIX_CONFIG_UNSUPPORTED,
    PREFIX_INVALID_ARG,
    PREFIX_XML_ERROR,
    ContextError,
    SecurityError,
    XMLError,
)
from svirt.host import selinux as host_selinux

__all__ = ["check_domain", "default_model", "primary_drivers", "stacked_models"]

log = logging.getLogger(__name__)


def primary_drivers(cfg: Config) -> tuple[str, ...]:
    """The non-DAC drivers, in stack order."""
    if cfg.security_driver is not None and len(cfg.security_driver) > 0:
        return cfg.security_driver
    return ("selinux",) if host_selinux.is_enabled() else ("none",)


def stacked_models(cfg: Config) -> tuple[str, ...]:
    """Every nested driver's model: the primary drivers, then ``dac``."""
    return (*primary_drivers(cfg), "dac")


def default_model(cfg: Config) -> str:
    """The primary driver's model: the default for a model-less ``<seclabel>``."""
    return primary_drivers(cfg)[0]


def _check_dac_label(label: str, what: str) -> None:
    user, sep, group = label.partition(":")
    if not sep or not user or not group:
        raise SecurityError(PREFIX_INVALID_ARG + f"Failed to parse uid and gid from '{label}'")
    for part in (user, group):
        digits = part[1:] if part.startswith("+") else part
        if part.startswith("+") and not digits.isdigit():
            raise SecurityError(
                PREFIX_INVALID_ARG + f"Failed to parse uid and gid from '{label}' ({what})"
            )


def _check_selinux_label(label: str) -> None:
    try:
        SecurityContext.parse(label)
    except ContextError as exc:
        raise XMLError(
            PREFIX_XML_ERROR + f"Invalid security label {label}: {exc.message}"
        ) from None


def _check_device_labels(
    labels: tuple[DeviceSeclabel, ...], what: str, available: Callable[[str | None], None] | None
) -> None:
    for dsl in labels:
        if available is not None:
            available(dsl.model)
        if dsl.label is not None and dsl.model == "selinux":
            _check_selinux_label(dsl.label)
        elif dsl.label is not None and dsl.model == "dac":
            _check_dac_label(dsl.label, what)


def check_domain(domain: Domain, cfg: Config) -> None:
    """What libvirt checks before start: models available (``CheckAllLabel``), confinement
    policy, and label syntax (``Verify``). Raises the libvirt error on the first problem."""
    # A host configuration error, reported before anything about the domain.
    if cfg.security_require_confined and "none" in primary_drivers(cfg):
        raise SecurityError(
            PREFIX_CONFIG_UNSUPPORTED + 'Security driver "none" cannot create confined guests'
        )
    models = stacked_models(cfg)

    def available(model: str | None) -> None:
        if model is not None and model != "none" and model not in models:
            raise SecurityError(
                PREFIX_CONFIG_UNSUPPORTED + f"Security driver model '{model}' is not available"
            )

    for sl in domain.seclabels:
        available(sl.model)
        if sl.type is SeclabelType.NONE and cfg.security_require_confined:
            raise SecurityError(
                PREFIX_CONFIG_UNSUPPORTED + "Unconfined guests are not allowed on this host"
            )
        for text in (sl.label, sl.imagelabel, sl.baselabel):
            if text is None:
                continue
            if sl.model == "selinux":
                _check_selinux_label(text)
            elif sl.model == "dac":
                _check_dac_label(text, "domain seclabel")
    for disk in domain.disks:
        if disk.source is None:
            continue
        for src in disk.source.chain():
            # Only the top source's models are checked for availability, as libvirt does.
            _check_device_labels(
                src.seclabels, f"disk {disk.target}", available if src is disk.source else None
            )
    for ch in domain.chardevs:
        _check_device_labels(ch.seclabels, ch.kind.value, available)
