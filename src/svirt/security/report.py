"""What happened to each resource: the per-resource outcomes of a transaction (issue 14).

Every status line of ``start``, ``stop``, ``label``, ``restore``, ``attach-disk`` and
``detach-disk`` is built from these records, and ``--json`` carries them as they are.
The classification comes from the drivers (their :class:`~svirt.security.driver.Outcome`
and :class:`~svirt.security.driver.Left` entries) and the transaction (why nothing was
remembered, what was put back from svirt's own copy); this module only puts it in words,
in one place, so that no message says "restored" for something left alone, or names a
label that was never applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from svirt.security.driver import Action, LabelOp, Left, Outcome

__all__ = [
    "FAILED",
    "LEFT",
    "ResourceOutcome",
    "describe",
    "from_left",
    "image_label_status",
    "ordered",
    "shared_notes",
    "summary",
]

LEFT = "left"  # a rule left the resource alone (no operation)
FAILED = "failed"  # the operation raised

# why nothing was remembered (the transaction knows)
NOT_REMEMBERED_CONFIG = "remember_owner = 0"
NOT_REMEMBERED_LOCK = "its metadata lock could not be taken"
NOT_REMEMBERED_KIND = "libvirt's rule for this kind of resource"
NOT_REMEMBERED_FILE = "no remembered original on the file"


@dataclass(frozen=True, slots=True)
class ResourceOutcome:
    """One driver's outcome on one path of one resource.

    ``outcome`` is an :class:`Outcome` value, ``"left"`` or ``"failed"``; ``text`` says it
    in words (the CLI prints it as is); ``value`` is the label/owner the file has after it
    (None where unknown or unchanged); ``before`` what it had; ``reinstated`` the
    original put back from svirt's own copy (libvirt had erased the xattrs)."""

    driver: str
    action: str  # "set" | "restore"
    resource: str  # "disk vda", "serial 0", "search path"
    path: str
    outcome: str
    text: str
    value: str | None = None
    before: str | None = None
    reinstated: str | None = None
    why: str | None = None  # the reason of a skip, a default or a rule

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceOutcome:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @property
    def changed(self) -> bool:
        """The file was changed by this operation."""
        try:
            return Outcome(self.outcome).kind is Outcome.DONE
        except ValueError:
            return False


def _what(driver: str) -> str:
    return "owner" if driver == "dac" else "label"


def _need(op: LabelOp, path_is_dir: bool) -> str:
    if path_is_dir:
        return "search it"
    return "read it" if op.readonly else "read and write it"


def describe(
    op: LabelOp,
    outcome: Outcome,
    *,
    before: str | None,
    after: str | None,
    remembered: bool,
    not_remembered_why: str | None,
    reinstated: str | None = None,
    is_dir: bool = False,
    acl: str | None = None,
) -> ResourceOutcome:
    """The record of one applied operation (called by the transaction)."""
    what = _what(op.driver)
    why: str | None = None
    if op.action is Action.SET:
        if outcome is Outcome.DONE:
            text = f"{what} {after or op.value} set"
            if before is not None and before != (after or op.value):
                if remembered:
                    text += f" (original {before} remembered)"
                else:
                    why = not_remembered_why
                    text += f" (original {before} not remembered" + (f": {why})" if why else ")")
            elif before is not None:
                text = f"{what} {before} already set"
        elif outcome is Outcome.GRANTED:
            text = f"ACL entry {acl or 'for ' + (op.value or '?')} added ({what} unchanged)"
        elif outcome is Outcome.USABLE:
            why = f"{op.value} can already {_need(op, is_dir)}"
            text = f"skipped: {why}; {what} {before} unchanged"
        elif outcome is Outcome.SHARED_KEPT:
            why = "shareable medium another domain uses read-write"
            text = f"label {before} kept ({why})"
        elif outcome is Outcome.SOFT_FAILED:
            why = "not supported on this filesystem"
            text = f"{what} not changed ({why})"
        else:
            text = f"{what} not changed"
    else:
        if reinstated is not None:
            text = (
                f"{what} restored to {after or reinstated}, put back from svirt's own copy "
                "(libvirt had erased the remembered original)"
            )
        elif outcome is Outcome.RESTORED:
            text = f"{what} restored to {after} (the remembered original)"
        elif outcome is Outcome.DEFAULTED:
            why = not_remembered_why
            text = f"{what} reset to the default {after}: nothing was remembered" + (
                f" ({why})" if why else ""
            )
        elif outcome is Outcome.REVOKED:
            text = f"ACL entry {acl or 'of ' + (op.value or '?')} removed; the ACL is as before"
        elif outcome is Outcome.IN_USE:
            why = "other domains still use it"
            text = f"{what} {before} left as it is: {why} (one reference fewer)"
        elif outcome is Outcome.UNCHANGED:
            why = "svirt never changed it"
            text = f"{what} {before} left as it is: {why}"
        elif outcome is Outcome.NO_DEFAULT:
            why = "nothing remembered and no default label in file_contexts"
            text = f"{what} {before} left as it is: {why}"
        elif outcome is Outcome.SOFT_FAILED:
            why = "not supported on this filesystem"
            text = f"{what} not restored ({why})"
        elif outcome is Outcome.DONE and after is None and op.driver == "selinux":
            text = "label removed: the file had none before"
        elif outcome is Outcome.DONE:
            text = f"{what} restored" + (f" to {after}" if after else "")
        else:
            text = f"{what} left as it is"
    return ResourceOutcome(
        op.driver,
        op.action.value,
        op.owner,
        op.path,
        outcome.value,
        text,
        value=after,
        before=before,
        reinstated=reinstated,
        why=why,
    )


def failed(op: LabelOp, error: str) -> ResourceOutcome:
    verb = "setting" if op.action is Action.SET else "restoring"
    return ResourceOutcome(
        op.driver,
        op.action.value,
        op.owner,
        op.path,
        FAILED,
        f"{verb} the {_what(op.driver)} failed: {error}",
        why=error,
    )


def from_left(left: Left) -> ResourceOutcome:
    what = _what(left.driver)
    if left.value is not None:
        text = f"{what} {left.value} left as it is: {left.why}"
    else:
        text = f"{what} not changed: {left.why}"
    return ResourceOutcome(
        left.driver,
        left.action.value,
        left.owner,
        left.path,
        LEFT,
        text,
        value=left.value,
        why=left.why,
    )


def summary(outcomes: Iterable[ResourceOutcome]) -> str:
    """Counts by what happened, e.g. "2 restored to the remembered original, 1 left as
    libvirt leaves it"; "nothing to do" when empty."""
    counts: dict[str, int] = {}
    order = [
        ("applied", "applied"),
        ("granted", "ACL entries added"),
        ("usable", "skipped (already usable)"),
        ("restored", "restored to the remembered original"),
        ("reinstated", "put back from svirt's own copy"),
        ("defaulted", "reset to the default (nothing remembered)"),
        ("revoked", "ACL entries removed"),
        ("in-use", "left in use by other domains"),
        ("unchanged", "left as they were (never changed)"),
        ("left", "left as libvirt leaves them"),
        ("not-changed", "not changed by rule"),
        ("kept", "kept"),
        ("not-supported", "not supported here"),
        ("failed", "failed"),
    ]
    for o in outcomes:
        key = {
            "done": "applied" if o.action == "set" else "restored",
            "soft-failed": "not-supported",
            "shared-kept": "kept",
            "no-default": "unchanged",
            "skipped": "unchanged",
        }.get(o.outcome, o.outcome)
        if o.reinstated is not None:
            key = "reinstated"
        elif key == "left" and "never restores" not in (o.why or ""):
            key = "not-changed"
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{counts[k]} {words}" for k, words in order if counts.get(k)]
    return ", ".join(parts) if parts else "nothing to do"


def ordered(outcomes: Iterable[ResourceOutcome], paths: Sequence[str]) -> list[ResourceOutcome]:
    """The outcomes in the domain's order of resources (``paths``), SELinux before DAC
    on each path; paths the domain does not list (search directories) last."""
    where = {p: i for i, p in reversed(list(enumerate(paths)))}
    rank = {"selinux": 0, "dac": 1}
    return sorted(outcomes, key=lambda o: (where.get(o.path, len(where)), rank.get(o.driver, 2)))


def image_label_status(imagelabel: str | None, outcomes: Iterable[ResourceOutcome]) -> str:
    """Whether the domain's image label was applied, in words (start, label)."""
    outs = list(outcomes)
    applied = [
        o for o in outs if o.driver == "selinux" and o.action == "set" and o.value == imagelabel
    ]
    if applied:
        n = len({o.path for o in applied})
        return f"{imagelabel} (applied to {n} file{'s' if n != 1 else ''})"
    left = [o for o in outs if o.driver == "selinux" and o.outcome == LEFT]
    if left:
        return f"not applied ({left[0].why})"
    return "not applied (no file of this domain takes it)"


def shared_notes(outcomes: Sequence[ResourceOutcome]) -> list[str]:
    """One note per read-only or shareable medium a restore left as libvirt leaves it,
    saying what stays (the label, the owner) and what was never changed."""
    notes = []
    by_path: dict[str, list[ResourceOutcome]] = {}
    for o in outcomes:
        by_path.setdefault(o.path, []).append(o)
    for path, group in by_path.items():
        shared = [o for o in group if o.outcome == LEFT and o.why and "never restores" in o.why]
        if not shared:
            continue
        kind = "read-only" if "read-only" in (shared[0].why or "") else "shareable"
        kept = [f"{_what(o.driver)} {o.value}" for o in shared if o.value is not None]
        never = [_what(o.driver) for o in shared if o.value is None]
        dac = next((o for o in group if o.driver == "dac" and o.outcome != LEFT), None)
        if not kept:
            continue
        text = (
            f"{path} is {kind}: like libvirt, svirt leaves the {' and '.join(kept)} it gave "
            "this medium (other domains may use it, and libvirt never restores them); put "
            f"{'it' if len(kept) == 1 else 'them'} back by hand once no domain uses it"
        )
        if dac is not None and dac.outcome == Outcome.REVOKED.value:
            text += "; its owner was never changed (svirt's ACL entry is removed)"
        elif dac is not None and dac.outcome in (Outcome.UNCHANGED.value, Outcome.IN_USE.value):
            text += f"; its owner: {dac.text}"
        elif never:
            text += (
                f"; its {' and '.join(never)} {'was' if len(never) == 1 else 'were'} never changed"
            )
        notes.append(text)
    return notes
