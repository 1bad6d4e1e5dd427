"""The security driver table, as in libvirt's ``virSecurityDriver``.

A driver generates, reserves and releases a domain's label, turns a domain's resources
into label operations (:class:`LabelOp`), and applies one operation to one file. The
manager composes drivers into a stack; the transaction runs the operations with
metadata locks, a durable journal, and reverse rollback. Keeping "what to do" (pure
operations) apart from "doing it" is what makes dry runs, journals and rollback simple.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from svirt.domain.model import Domain, Seclabel
from svirt.domain.resources import Resource

__all__ = ["Action", "LabelOp", "Outcome", "SecurityDriver"]


class Action(enum.Enum):
    SET = "set"
    RESTORE = "restore"


class Outcome(enum.Enum):
    DONE = "done"  # the label/owner was changed (or already had the value)
    SOFT_FAILED = "soft-failed"  # unsupported here (EOPNOTSUPP, EROFS, EPERM...): tolerated
    SKIPPED = "skipped"  # nothing to do (still in use, no default label, already owned)


@dataclass(frozen=True, slots=True)
class LabelOp:
    """One planned change to one path by one driver.

    For SET, ``value`` is the new label (``+uid:+gid`` for DAC) and ``remember`` asks to
    record the original in the xattrs. For RESTORE, ``value`` is None and ``remember``
    means "recall the original from the xattrs" (else restore the default).
    """

    driver: str
    action: Action
    path: str
    value: str | None
    remember: bool
    owner: str  # the resource, for messages: "disk vda", "serial 0"
    readonly: bool = False  # the VM needs read access only (for DAC ACL mode, pre-flight)


class SecurityDriver(Protocol):
    """What every driver provides. ``name`` is the seclabel model it owns."""

    name: str

    def gen_label(self, domain: Domain, seclabel: Seclabel) -> Seclabel:
        """Fill in a generated label (and reserve it); return the new seclabel."""
        ...

    def adopt_label(self, domain: Domain, seclabel: Seclabel) -> Seclabel:
        """Take over a label a live XML already carries (reserve it)."""
        ...

    def reserve_label(self, domain: Domain, seclabel: Seclabel, pid: int | None) -> None:
        """Re-register a running domain's label (reconnect)."""
        ...

    def release_label(self, domain: Domain, seclabel: Seclabel) -> Seclabel:
        """Release the label; return the seclabel with generated parts cleared."""
        ...

    def set_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        """Operations that label the given resources for this domain."""
        ...

    def restore_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        """Operations that restore the given resources after this domain."""
        ...

    def apply(self, op: LabelOp, target: str | None = None) -> Outcome:
        """Carry out one operation. ``target`` is the path to act through (a
        ``/proc/self/fd/N`` of the inode the transaction checked); ``op.path`` is what
        messages name."""
        ...

    def current(self, path: str) -> str | None:
        """The path's current label or owner in this driver's terms (for plans)."""
        ...
