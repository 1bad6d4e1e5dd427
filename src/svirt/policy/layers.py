"""``svirt verify``'s two layers (issue 11): what SELinux decides and whether it is
enforced, and what plain DAC allows right now; two VMs are isolated only when at least
one layer that is really in force separates them.

The SELinux layer is :mod:`svirt.policy.verify`'s matrix (the policy's decisions for the
labels on disk). It separates a pair only where the host enforces SELinux *and* the
subject's QEMU really runs with its label (``/proc/PID/attr/current``).

The DAC layer takes each QEMU's real identity from ``/proc/PID/status`` (uid, gid,
supplementary groups, effective capabilities) and asks, with the POSIX.1e rules and the
files' ACLs as they are now, whether it may search every directory down to each other
VM's private resource and read or write it; and whether it may read the other QEMU's
memory (``/proc/PID/mem`` needs ptrace access: the same uid, or CAP_SYS_PTRACE).
Read-only and shareable media are meant to be shared and are not counted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from svirt.host import acl as host_acl
from svirt.host import selinux as host_selinux

__all__ = [
    "DacAccess",
    "PairVerdict",
    "ProcIdentity",
    "SelinuxEnforcement",
    "dac_accesses",
    "proc_identity",
    "selinux_enforcement",
]

_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_CAP_SYS_PTRACE = 19


@dataclass(frozen=True, slots=True)
class ProcIdentity:
    """The DAC identity a process acts with."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]
    cap_eff: int

    def has_cap(self, cap: int) -> bool:
        return bool(self.cap_eff >> cap & 1)

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


def proc_identity(pid: int) -> ProcIdentity | None:
    """``pid``'s effective uid, gid, groups and capabilities, None if it is gone."""
    uid = gid = -1
    groups: frozenset[int] = frozenset()
    cap = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key == "Uid":
                    uid = int(value.split()[1])
                elif key == "Gid":
                    gid = int(value.split()[1])
                elif key == "Groups":
                    groups = frozenset(int(g) for g in value.split())
                elif key == "CapEff":
                    cap = int(value.strip(), 16)
    except (OSError, ValueError, IndexError):
        return None
    if uid < 0 or gid < 0:
        return None
    return ProcIdentity(pid, uid, gid, groups | {gid}, cap)


@dataclass(frozen=True, slots=True)
class SelinuxEnforcement:
    """Whether SELinux separates this subject for real."""

    enforcing: bool  # the host enforces SELinux
    confined: bool  # the process runs with the label verify judged it by

    @property
    def enforced(self) -> bool:
        return self.enforcing and self.confined


def selinux_enforcement(pid: int, label: str | None) -> SelinuxEnforcement:
    enforcing = host_selinux.getenforce()
    confined = False
    if enforcing and label is not None:
        try:
            confined = host_selinux.getpidcon(pid) == label
        except OSError:
            confined = False
    return SelinuxEnforcement(enforcing, confined)


@dataclass(frozen=True, slots=True)
class DacAccess:
    """One access plain DAC allows ``subject`` on another domain's resource (``what``
    is ``read``, ``read-write`` or ``memory``)."""

    subject: str
    identity: str
    target: str
    what: str
    path: str
    why: str


def _may(ident: ProcIdentity, path: str, need: int) -> tuple[bool, str]:
    """Whether ``ident`` may open ``path`` for ``need`` (with every directory above it
    searchable), and a short reason."""
    override = ident.uid == 0 or ident.has_cap(_CAP_DAC_OVERRIDE)
    if override:
        return True, "it runs with CAP_DAC_OVERRIDE (root)"
    d = os.path.dirname(os.path.abspath(path))
    dirs = []
    while True:
        dirs.append(d)
        if d == "/":
            break
        d = os.path.dirname(d)
    for d in dirs:
        try:
            st = os.stat(d)
            acl, _ = host_acl.read_acl(d)
        except (OSError, ValueError):
            return False, f"{d} cannot be examined"
        if not host_acl.can_access(st, acl, ident.uid, ident.groups, host_acl.X):
            return False, f"it cannot search {d}"
    try:
        st = os.stat(path)
        acl, _ = host_acl.read_acl(path)
    except (OSError, ValueError):
        return False, "the file cannot be examined"
    if host_acl.can_access(st, acl, ident.uid, ident.groups, need):
        return True, (
            f"owner {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o7777:04o}"
            + (", with an ACL" if len(acl.entries) > 3 else "")
        )
    return False, "the mode and ACL deny it"


def dac_accesses(
    subject: str,
    ident: ProcIdentity,
    target: str,
    target_ident: ProcIdentity | None,
    private_paths: Sequence[str],
) -> list[DacAccess]:
    """Every way DAC lets ``subject``'s QEMU reach ``target``'s private resources or
    memory."""
    out: list[DacAccess] = []
    for path in private_paths:
        can_rw, why = _may(ident, path, host_acl.R | host_acl.W)
        if can_rw:
            out.append(DacAccess(subject, str(ident), target, "read-write", path, why))
            continue
        can_r, why = _may(ident, path, host_acl.R)
        if can_r:
            out.append(DacAccess(subject, str(ident), target, "read", path, why))
    if target_ident is not None and (
        ident.uid == target_ident.uid or ident.uid == 0 or ident.has_cap(_CAP_SYS_PTRACE)
    ):
        why = (
            "both QEMUs run as uid "
            f"{ident.uid}: ptrace access (/proc/PID/mem) is allowed between them"
            if ident.uid == target_ident.uid
            else "it may ptrace any process (root or CAP_SYS_PTRACE)"
        )
        out.append(
            DacAccess(subject, str(ident), target, "memory", f"/proc/{target_ident.pid}/mem", why)
        )
    return out


@dataclass(frozen=True, slots=True)
class PairVerdict:
    """Whether ``subject``'s QEMU is kept from ``target``'s, and by which layer."""

    subject: str
    target: str
    selinux_policy_denies: bool  # the policy denies every cross access (labels on disk)
    selinux_enforced: bool  # ...and SELinux enforces it on this subject
    dac_denies: bool  # plain DAC denies every cross access and the memory
    # static: both run with this static label, so they share by configuration (issue 14)
    shared_label: str | None = None

    @property
    def separated(self) -> bool:
        return (self.selinux_policy_denies and self.selinux_enforced) or self.dac_denies

    @property
    def as_configured(self) -> bool:
        """Kept apart, or not kept apart only because both share one static label."""
        return self.separated or self.shared_label is not None

    def describe(self) -> str:
        if self.shared_label is not None and not self.separated:
            return (
                f"{self.subject} -> {self.target}: shared by configuration (both run with "
                f"the static label {self.shared_label})"
            )
        if self.selinux_policy_denies and self.selinux_enforced:
            by = "SELinux (enforced)" + (" and DAC" if self.dac_denies else "")
            return f"{self.subject} -> {self.target}: isolated by {by}"
        if self.dac_denies:
            return f"{self.subject} -> {self.target}: isolated by DAC"
        selinux = (
            "SELinux would allow it"
            if not self.selinux_policy_denies
            else "SELinux would deny it but is not enforced"
        )
        return f"{self.subject} -> {self.target}: not isolated ({selinux}; DAC allows it)"
