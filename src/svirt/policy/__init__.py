"""svirt.policy: access decisions from the real binary policy, and isolation checks.

:mod:`svirt.policy.oracle` answers "may this label do that to that label" with
audit2why's reasons; :mod:`svirt.policy.verify` proves, from the same policy, that no
running VM can reach another's resources.
"""

from svirt.policy.oracle import (
    READ_PERMS,
    READ_WRITE_PERMS,
    Access,
    Decision,
    PolicyOracle,
    Reason,
    available_backends,
    default_policy_path,
    tclass_for_mode,
)

__all__ = [
    "READ_PERMS",
    "READ_WRITE_PERMS",
    "Access",
    "Decision",
    "PolicyOracle",
    "Reason",
    "available_backends",
    "default_policy_path",
    "tclass_for_mode",
]
