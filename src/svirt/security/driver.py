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

__all__ = [
    "Action",
    "LabelOp",
    "Left",
    "Outcome",
    "Preview",
    "SecurityDriver",
    "shared_medium_rule",
]


class Action(enum.Enum):
    SET = "set"
    RESTORE = "restore"


class Outcome(enum.Enum):
    """What one operation did to one file. DONE, SOFT_FAILED and SKIPPED are the coarse
    kinds (:attr:`kind`); the others say precisely why (issue 14: messages say what
    happened, never "restored" for something left alone)."""

    DONE = "done"  # the label/owner was changed (or already had the value)
    SOFT_FAILED = "soft-failed"  # unsupported here (EOPNOTSUPP, EROFS, EPERM...): tolerated
    SKIPPED = "skipped"  # nothing to do
    # set
    USABLE = "usable"  # DAC: QEMU's identity can already use the file: not chowned/granted
    GRANTED = "granted"  # DAC ACL mode: a named-user ACL entry added for QEMU's identity
    SHARED_KEPT = "shared-kept"  # a read-only user of a shareable file keeps its label
    # restore
    RESTORED = "restored"  # the remembered original put back (this was the last user)
    DEFAULTED = "defaulted"  # nothing remembered: reset to the default
    REVOKED = "revoked"  # DAC ACL mode: our ACL entry removed, the ACL as it was
    IN_USE = "in-use"  # other users remain: left, one reference fewer
    UNCHANGED = "unchanged"  # already as it should be (never changed by svirt)
    NO_DEFAULT = "no-default"  # nothing remembered and no default label: left

    @property
    def kind(self) -> Outcome:
        """DONE, SOFT_FAILED or SKIPPED."""
        if self in _DONE_KIND:
            return Outcome.DONE
        if self is Outcome.SOFT_FAILED:
            return Outcome.SOFT_FAILED
        return Outcome.SKIPPED


_DONE_KIND = frozenset(
    {Outcome.DONE, Outcome.GRANTED, Outcome.RESTORED, Outcome.DEFAULTED, Outcome.REVOKED}
)


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


@dataclass(frozen=True, slots=True)
class Left:
    """A resource a driver deliberately does not touch, and why (libvirt's rules:
    ``relabel='no'``, read-only and shareable media never restored, ...)."""

    driver: str
    action: Action
    path: str
    owner: str  # the resource, as in LabelOp
    why: str  # "relabel='no'", "dynamic_ownership = 0", "read-only medium: ...", ...
    value: str | None = None  # the label/owner svirt gave it that stays; None: untouched


@dataclass(frozen=True, slots=True)
class Preview:
    """What applying one SET operation would do now (``svirt label --dry-run``)."""

    outcome: Outcome  # DONE (label/chown), GRANTED (ACL entry), USABLE, SHARED_KEPT...
    change: str  # the change, in words: "u:1000:rw- added (mask rw-)", "chown to +107:+107"
    undo: str | None  # what the restore will do, where the driver knows better than the plan


def shared_medium_rule(kind: str) -> str:
    """The one text of libvirt's rule that read-only and shareable media (and backing
    layers) are never restored (``kind``: "read-only", "shareable" or "backing")."""
    what = "backing layer" if kind == "backing" else f"{kind} medium"
    return f"{what}: like libvirt, svirt never restores it (other domains may use it)"


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

    def left(self, domain: Domain, resources: Sequence[Resource], action: Action) -> list[Left]:
        """What this driver's rules leave alone for these resources (no operation)."""
        ...

    def preview(self, op: LabelOp) -> Preview:
        """What ``apply(op)`` (a SET) would do to the file as it is now; changes nothing."""
        ...
