"""User and group identities: svirt.conf's ``user``/``group`` resolved the libvirt way.

libvirt (``virGetUserID``/``virGetGroupID``) resolves a name first and falls back to a
number, so a user called ``107`` wins over uid 107; a leading ``+`` forces the numeric
reading and skips the name lookup. A uid needs no passwd entry: QEMU can run as any
number. The supplementary groups QEMU gets are the user's own (``getgrouplist``), as
libvirt's ``virGetGroupList`` computes them, never the caller's.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from typing import NewType

from svirt.errors import PREFIX_INVALID_ARG, ConfigError

__all__ = [
    "Gid",
    "Identity",
    "Pid",
    "Uid",
    "resolve_gid",
    "resolve_identity",
    "resolve_uid",
]

Uid = NewType("Uid", int)
Gid = NewType("Gid", int)
Pid = NewType("Pid", int)

# (uid_t)-1 and (gid_t)-1 mean "leave unchanged" to setresuid/chown: never an identity.
_ID_MAX = 2**32 - 2


def _parse_number(text: str) -> int | None:
    # virStrToLong_ui: decimal digits only (no sign, no spaces), within uid_t.
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text, 10)
    return value if value <= _ID_MAX else None


def resolve_uid(user: str) -> Uid:
    """The uid for svirt.conf's ``user``: ``+N`` is numeric, else name first, then number.

    Raises :class:`ConfigError` with libvirt's text when neither reading works.
    """
    text = user
    if text.startswith("+"):
        text = text[1:]
    else:
        try:
            return Uid(pwd.getpwnam(text).pw_uid)
        except KeyError:
            pass
    value = _parse_number(text)
    if value is None:
        raise ConfigError(f"{PREFIX_INVALID_ARG}Failed to parse user '{text}'")
    return Uid(value)


def resolve_gid(group: str) -> Gid:
    """The gid for svirt.conf's ``group``, resolved like :func:`resolve_uid`."""
    text = group
    if text.startswith("+"):
        text = text[1:]
    else:
        try:
            return Gid(grp.getgrnam(text).gr_gid)
        except KeyError:
            pass
    value = _parse_number(text)
    if value is None:
        raise ConfigError(f"{PREFIX_INVALID_ARG}Failed to parse group '{text}'")
    return Gid(value)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who QEMU runs as: uid, primary gid, and the complete supplementary group list."""

    uid: Uid
    gid: Gid
    groups: tuple[Gid, ...]
    user_name: str | None = None  # None: the uid has no passwd entry

    def __str__(self) -> str:
        return f"+{self.uid}:+{self.gid}"


def _group_list(uid: Uid, gid: Gid) -> tuple[str | None, tuple[Gid, ...]]:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return None, (gid,)
    # getgrouplist puts `gid` in the list itself; resolved here, in the parent, because
    # NSS lookups are unsafe in a child forked from a threaded process.
    groups = [Gid(g) for g in os.getgrouplist(name, gid)]
    if gid not in groups:
        groups.insert(0, gid)
    return name, tuple(dict.fromkeys(groups))


def resolve_identity(user: str, group: str) -> Identity:
    """Resolve svirt.conf's ``user`` and ``group`` into the identity QEMU runs as."""
    uid = resolve_uid(user)
    gid = resolve_gid(group)
    name, groups = _group_list(uid, gid)
    return Identity(uid=uid, gid=gid, groups=groups, user_name=name)
