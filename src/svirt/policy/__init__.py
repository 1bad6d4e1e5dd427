"""svirt.policy: access decisions from the real binary policy, and isolation checks.

:mod:`svirt.policy.oracle` answers "may this label do that to that label" with
audit2why's reasons; :mod:`svirt.policy.verify` proves, from the same policy, that no
running VM can reach another's resources.

The public surface is ``__all__`` (``docs/api.md``): :func:`check` for one decision,
:class:`PolicyOracle` for many, and the types of :meth:`svirt.Host.verify`'s report.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svirt.errors import PolicyError
from svirt.policy.oracle import (
    BACKENDS,
    READ_PERMS,
    READ_WRITE_PERMS,
    Access,
    Decision,
    PolicyOracle,
    Reason,
    available_backends,
    default_policy_path,
    tclass_for_mode,
    with_active_booleans,
)

if TYPE_CHECKING:
    from svirt.policy.layers import DacAccess, PairVerdict
    from svirt.policy.verify import (
        BooleanRisk,
        CellAccess,
        CheckedResource,
        Exposure,
        Finding,
        IsolationMatrix,
        MatrixCell,
        OwnDenial,
        SharedLabel,
        SharedResource,
        Skipped,
        VerifyReport,
    )

# The verify report's types, imported on first use: `svirt policy check` does not load
# the verifier (PEP 562).
_VERIFY = (
    "BooleanRisk",
    "CellAccess",
    "CheckedResource",
    "Exposure",
    "Finding",
    "IsolationMatrix",
    "MatrixCell",
    "OwnDenial",
    "SharedLabel",
    "SharedResource",
    "Skipped",
    "VerifyReport",
)
_LAZY = {
    **dict.fromkeys(_VERIFY, "svirt.policy.verify"),
    "DacAccess": "svirt.policy.layers",
    "PairVerdict": "svirt.policy.layers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'svirt.policy' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


_BAD_INPUT = {
    Reason.BADSCON: "invalid source context '{scon}'",
    Reason.BADTCON: "invalid target context '{tcon}'",
    Reason.BADTCLASS: "unknown object class '{tclass}'",
    Reason.BADPERM: "unknown permission in {{ {perms} }} for class '{tclass}'",
}


def check(
    scon: str,
    tcon: str,
    tclass: str,
    perms: Sequence[str] | str,
    *,
    policy: PolicyOracle | str | os.PathLike[str] | None = None,
    backend: str | None = None,
) -> Decision:
    """May a process labelled ``scon`` do ``perms`` on a ``tclass`` object labelled
    ``tcon``, and why (audit2why's reason; the constraint text; the booleans that would
    allow it).

    ``perms``: a list, or one string of space-separated names. ``policy``: a binary policy
    file, an open :class:`PolicyOracle`, or None for the installed policy. Raises
    :class:`~svirt.errors.PolicyError` when the policy cannot be loaded, and for a bad
    context, class or permission (naming it and the policy).
    """
    if isinstance(perms, str):
        perms = perms.split()
    oracle = (
        policy
        if isinstance(policy, PolicyOracle)
        else PolicyOracle(None if policy is None else Path(policy), backend=backend)
    )
    decision = oracle.decide(scon, tcon, tclass, list(perms))
    if decision.reason.is_bad_input:
        what = _BAD_INPUT[decision.reason].format(
            scon=scon, tcon=tcon, tclass=tclass, perms=" ".join(perms)
        )
        raise PolicyError(f"{what} for policy {oracle.path}")
    return decision


__all__ = [
    "BACKENDS",
    "READ_PERMS",
    "READ_WRITE_PERMS",
    "Access",
    "BooleanRisk",
    "CellAccess",
    "CheckedResource",
    "DacAccess",
    "Decision",
    "Exposure",
    "Finding",
    "IsolationMatrix",
    "MatrixCell",
    "OwnDenial",
    "PairVerdict",
    "PolicyOracle",
    "Reason",
    "SharedLabel",
    "SharedResource",
    "Skipped",
    "VerifyReport",
    "available_backends",
    "check",
    "default_policy_path",
    "tclass_for_mode",
    "with_active_booleans",
]
