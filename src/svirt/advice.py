"""The fixes svirt recommends that keep isolation: one place for each rule, used by
``audit explain``, ``verify``, pre-flight and ``doctor``/``recover`` alike (issue 14).

The rule for a running VM whose resource lost its label (relabelled by hand, the Fedora
sVirt page's ``chcon -l s0:c1``): the fix is **the VM's own label** (its image label,
``chcon -l s0:cA,cB PATH``) or ``svirt recover --apply PATH``, which puts that label back
in a journalled transaction. Never ``restorecon`` (the default label takes the file away
from the running VM) and never ``chcon -l s0`` (a label without categories opens the file
to every VM). Pure: no I/O.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from svirt.context import SecurityContext
from svirt.errors import ContextError

__all__ = [
    "DRIFT_DO_NOT",
    "Fix",
    "boolean_fixes",
    "chcon_command",
    "own_label_fixes",
    "recover_command",
]


@dataclass(frozen=True, slots=True)
class Fix:
    """One remedy: what to do and, when there is one, the command or XML."""

    text: str
    command: str | None = None


DRIFT_DO_NOT = (
    "Do not run restorecon on it (the default label takes the file away from the running "
    "VM) nor chcon -l s0 (a label without categories lets every VM use it)."
)


def recover_command(
    path: str | None = None, *, config: str | None = None, take: bool = False
) -> str:
    """``svirt recover [--config F] --apply [--take-from-libvirt] [PATH]``; ``config`` is
    the svirt.conf to name (None, or a ``<...>`` pseudo-source: the default one)."""
    conf = f" --config {shlex.quote(config)}" if config and not config.startswith("<") else ""
    flag = " --take-from-libvirt" if take else ""
    return f"svirt recover{conf} --apply{flag}" + (f" {shlex.quote(path)}" if path else "")


def chcon_command(path: str, wanted: str, current: str | None = None) -> str:
    """The ``chcon`` that gives ``path`` the context ``wanted``, naming only what differs
    from ``current`` (``-l LEVEL``; ``-t TYPE -l LEVEL``); the whole context otherwise."""
    target = shlex.quote(path)
    try:
        want = SecurityContext.parse(wanted)
        have = SecurityContext.parse(current) if current is not None else None
    except ContextError:
        return f"chcon {shlex.quote(wanted)} {target}"
    if have is None or (want.user, want.role) != (have.user, have.role) or want.range is None:
        return f"chcon {shlex.quote(wanted)} {target}"
    if want.type != have.type:
        return f"chcon -t {want.type} -l {want.range} {target}"
    return f"chcon -l {want.range} {target}"


def own_label_fixes(
    vm: str,
    path: str,
    wanted: str | None,
    current: str | None = None,
    *,
    config: str | None = None,
    recoverable: bool = True,
) -> tuple[Fix, ...]:
    """The fix for a running (or labelled) VM's resource that does not carry the label
    the VM gave it: that label again, by hand or by ``svirt recover --apply``.
    ``wanted`` is the VM's label for the file (its image label for a private disk; None
    when only svirt's plan knows it). ``recoverable``: svirt labelled the file for the VM
    (relabel='yes'), so ``svirt recover --apply`` knows the label to put back."""
    fixes: list[Fix] = []
    if wanted is not None:
        fixes.append(
            Fix(
                f"give {path} back the label {vm} uses ({wanted}): only {vm} can then use it",
                chcon_command(path, wanted, current),
            )
        )
    if not recoverable:
        return tuple(fixes)
    fixes.append(
        Fix(
            ("or " if fixes else "")
            + f"let svirt put {vm}'s label back (journalled; the original is still restored "
            f"when {vm} stops)",
            recover_command(path, config=config),
        )
    )
    return tuple(fixes)


def boolean_fixes(booleans: Sequence[tuple[str, bool]]) -> tuple[Fix, ...]:
    """A boolean's own switch for an access it governs."""
    return tuple(
        Fix(
            f"turn on {name}" if value else f"turn off {name}",
            f"setsebool -P {name} {'1' if value else '0'}",
        )
        for name, value in booleans
    )
