"""svirt.conf's user/group resolved like libvirt's virGetUserID/virGetGroupID, against
this host's real passwd and group databases (scripts/setup.sh creates svirt-qemu)."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from svirt.errors import ConfigError
from svirt.host.ids import Gid, Identity, Uid, resolve_gid, resolve_identity, resolve_uid


def _free_id() -> int:
    for n in range(4242, 60000):
        try:
            pwd.getpwuid(n)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(n)
        except KeyError:
            return n
    raise AssertionError("no free id")


def test_names_resolve_first() -> None:
    assert resolve_uid("svirt-qemu") == pwd.getpwnam("svirt-qemu").pw_uid
    assert resolve_gid("svirt-qemu") == grp.getgrnam("svirt-qemu").gr_gid
    assert resolve_uid("root") == 0 and resolve_gid("root") == 0


def test_numbers_need_no_entry() -> None:
    n = _free_id()
    assert resolve_uid(str(n)) == n
    assert resolve_uid(f"+{n}") == n
    assert resolve_gid(f"+{n}") == n
    assert resolve_uid("+0") == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no-such-user-svirt", "invalid argument: Failed to parse user 'no-such-user-svirt'"),
        ("+svirt-qemu", "invalid argument: Failed to parse user 'svirt-qemu'"),  # + forces numeric
        ("-1", "invalid argument: Failed to parse user '-1'"),
        ("4294967295", "invalid argument: Failed to parse user '4294967295'"),  # (uid_t)-1
        ("", "invalid argument: Failed to parse user ''"),
    ],
)
def test_user_refusals(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_uid(value)
    assert str(info.value) == message


def test_group_refusal() -> None:
    with pytest.raises(ConfigError, match=r"^invalid argument: Failed to parse group 'x y'$"):
        resolve_gid("x y")


def test_identity_takes_the_users_own_groups() -> None:
    ident = resolve_identity("svirt-qemu", "svirt-qemu")
    entry = pwd.getpwnam("svirt-qemu")
    assert ident.uid == entry.pw_uid and ident.gid == entry.pw_gid
    assert set(ident.groups) == set(os.getgrouplist("svirt-qemu", entry.pw_gid))
    assert ident.groups[0] == ident.gid
    assert ident.user_name == "svirt-qemu"


def test_identity_without_passwd_entry_has_only_its_gid() -> None:
    n = _free_id()
    expected = Identity(uid=Uid(n), gid=Gid(0), groups=(Gid(0),), user_name=None)
    assert resolve_identity(f"+{n}", "+0") == expected
    assert str(resolve_identity(f"+{n}", f"+{n}")) == f"+{n}:+{n}"
