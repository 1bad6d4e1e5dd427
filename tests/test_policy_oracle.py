"""The policy oracle against the real reference policy (selinux-policy-default).

The decision table is platform.md's ("Policy decisions INCLUDING the MCS constraints");
every case runs on both backends, and a wider set checks that they agree exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from svirt.errors import PolicyError, SvirtError
from svirt.policy import (
    Access,
    Decision,
    PolicyOracle,
    Reason,
    available_backends,
    default_policy_path,
    tclass_for_mode,
)
from svirt.policy.oracle import policy_with_booleans

pytestmark = pytest.mark.policy

POLICY = Path("/etc/selinux/default/policy/policy.33")
VM = "system_u:system_r:svirt_t:s0:c1,c2"
BACKENDS = ["audit2why", "libsepol"]


def img(level: str, type_: str = "svirt_image_t") -> str:
    return f"system_u:object_r:{type_}:{level}"


@pytest.fixture(scope="module", params=BACKENDS)
def oracle(request: pytest.FixtureRequest) -> PolicyOracle:
    return PolicyOracle(POLICY, backend=request.param)


# platform.md, "Examples (real policy)".
TABLE = [
    (VM, img("s0:c3,c4"), "file", ["write"], Reason.CONSTRAINT),
    (VM, img("s0:c1,c2"), "file", ["write"], Reason.ALLOW),
    (VM, img("s0:c2"), "file", ["write"], Reason.ALLOW),  # dominance
    (VM, img("s0"), "file", ["write"], Reason.ALLOW),
    (VM, img("s0", "virt_image_t"), "file", ["write"], Reason.TERULE),
    (VM, img("s0", "virt_content_t"), "file", ["read"], Reason.ALLOW),
    (VM, img("s0", "nfs_t"), "file", ["read"], Reason.BOOLEAN),
]


@pytest.mark.parametrize(("scon", "tcon", "tclass", "perms", "reason"), TABLE)
def test_platform_decision_table(
    oracle: PolicyOracle, scon: str, tcon: str, tclass: str, perms: list[str], reason: Reason
) -> None:
    d = oracle.decide(scon, tcon, tclass, perms)
    assert d.reason is reason
    assert d.allowed is (reason is Reason.ALLOW)


def test_constraint_carries_the_mcs_constraint_text(oracle: PolicyOracle) -> None:
    d = oracle.decide(VM, img("s0:c3,c4"), "file", ["write"])
    assert d.constraint is not None
    assert d.constraint.startswith("mlsconstrain file {")
    assert "(h1 dom h2 -Fail-)" in d.constraint
    assert "mcs_constrained_type" in d.constraint
    assert "\n" not in d.constraint
    assert "h1 dom h2" in d.describe()


def test_boolean_names_the_booleans_that_would_allow(oracle: PolicyOracle) -> None:
    d = oracle.decide(VM, img("s0", "nfs_t"), "file", ["read"])
    assert ("virt_use_nfs", True) in d.booleans
    assert all(value is True for _, value in d.booleans)
    assert "setsebool -P virt_use_nfs on" in d.describe()


def test_dontaudit_is_reported_as_dontaudit(oracle: PolicyOracle) -> None:
    # dontaudit svirt_t virt_content_t:dir { ... write ... } and no allow for write.
    d = oracle.decide(VM, img("s0", "virt_content_t"), "dir", ["write"])
    assert d.reason is Reason.DONTAUDIT
    assert not d.allowed


def test_non_mls_constraint(oracle: PolicyOracle) -> None:
    # A domain transition to a context whose role differs: refpolicy's role constraint.
    d = oracle.decide(
        "system_u:system_r:virtd_t:s0-s0:c0.c1023",
        "system_u:object_r:svirt_t:s0:c1,c2",
        "process",
        ["transition"],
    )
    assert d.reason is Reason.CONSTRAINT
    assert d.constraint is not None and d.constraint.startswith("constrain process")


@pytest.mark.parametrize(
    ("scon", "tcon", "tclass", "perms", "reason"),
    [
        ("garbage", img("s0"), "file", ["read"], Reason.BADSCON),
        ("system_u:system_r:no_such_t:s0", img("s0"), "file", ["read"], Reason.BADSCON),
        (VM, "bad", "file", ["read"], Reason.BADTCON),
        (VM, "staff_u:staff_r:svirt_t:s0:c1,c2", "file", ["read"], Reason.BADTCON),
        (VM, img("s0:c1024"), "file", ["read"], Reason.BADTCON),
        (VM, img("s0"), "no_such_class", ["read"], Reason.BADTCLASS),
        (VM, img("s0"), "file", ["read", "no_such_perm"], Reason.BADPERM),
        (VM, img("s0"), "file", [], Reason.BADPERM),
        ("system_u:system_r:svirt_t:s0\0:c1", img("s0"), "file", ["read"], Reason.BADSCON),
        (VM, img("s0") + "\udcff", "file", ["read"], Reason.BADTCON),
        (VM, img("s0"), "fi\0le", ["read"], Reason.BADTCLASS),
        (VM, img("s0"), "file", ["re\0ad"], Reason.BADPERM),
    ],
)
def test_bad_input_is_a_decision_never_an_exception(
    oracle: PolicyOracle,
    capfd: pytest.CaptureFixture[str],
    scon: str,
    tcon: str,
    tclass: str,
    perms: list[str],
    reason: Reason,
) -> None:
    d = oracle.decide(scon, tcon, tclass, perms)
    assert d == Decision(reason, False)
    assert reason.is_bad_input
    # libsepol's complaints go to the debug log, not to the user's terminal.
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_bare_string_is_one_permission(oracle: PolicyOracle) -> None:
    assert oracle.decide(VM, img("s0:c1,c2"), "file", "write").allowed


def test_backends_agree(capfd: pytest.CaptureFixture[str]) -> None:
    """Every reason both ways, on the same queries, including multi-boolean answers."""
    assert set(available_backends()) == set(BACKENDS)
    a = PolicyOracle(POLICY, backend="audit2why")
    b = PolicyOracle(POLICY, backend="libsepol")
    levels = ["s0", "s0:c1", "s0:c2", "s0:c1,c2", "s0:c3,c4", "s0:c1,c3", "s0-s0:c0.c1023"]
    types = [
        "svirt_image_t",
        "virt_image_t",
        "virt_content_t",
        "public_content_t",
        "user_home_t",
        "nfs_t",
        "cifs_t",
        "fusefs_t",
        "usbfs_t",
        "unlabeled_t",
        "xdm_var_run_t",
    ]
    queries = [
        (VM, img(level, t), tclass, perms)
        for level in levels
        for t in types
        for tclass in ("file", "dir", "blk_file")
        for perms in (["read"], ["read", "write", "open"], ["getattr"])
    ]
    queries += [
        (
            "system_u:system_r:postfix_local_t:s0",
            "system_u:object_r:mail_spool_t:s0",
            "file",
            ["write"],
        ),
        ("system_u:system_r:unconfined_t:s0-s0:c0.c1023", img("s0:c3,c4"), "file", ["write"]),
        (VM, "system_u:system_r:svirt_t:s0:c3,c4", "process", ["signal"]),
        (VM, "system_u:system_r:svirt_t:s0:c1,c2", "process", ["signal"]),
        ("bad", img("s0"), "file", ["read"]),
    ]
    seen: set[Reason] = set()
    for q in queries:
        da, db = a.decide(*q), b.decide(*q)
        assert da == db, q
        seen.add(da.reason)
    assert {
        Reason.ALLOW,
        Reason.TERULE,
        Reason.BOOLEAN,
        Reason.CONSTRAINT,
        Reason.DONTAUDIT,
        Reason.BADSCON,
    } <= seen
    assert capfd.readouterr() == ("", "")


def test_cache_answers_repeated_questions() -> None:
    o = PolicyOracle(POLICY)
    first = o.decide(VM, img("s0:c3,c4"), "file", ["write"])
    again = o.decide(VM, img("s0:c3,c4"), "file", ["write"])
    assert again is first
    info = o.cache_info()
    assert (info.hits, info.misses, info.size) == (1, 1, 1)
    o.cache_clear()
    assert o.cache_info().size == 0


def test_cache_can_be_turned_off_and_is_bounded() -> None:
    off = PolicyOracle(POLICY, cache_size=0)
    off.decide(VM, img("s0"), "file", ["read"])
    off.decide(VM, img("s0"), "file", ["read"])
    assert off.cache_info() == type(off.cache_info())(0, 2, 0, 0)
    small = PolicyOracle(POLICY, cache_size=3)
    for i in range(10):
        small.decide(VM, img(f"s0:c{i}"), "file", ["read"])
    assert small.cache_info().size == 3


@pytest.fixture(scope="module")
def nfs_on_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference policy with virt_use_nfs on, built as setsebool -P would."""
    path = tmp_path_factory.mktemp("policy") / "policy.33"
    path.write_bytes(policy_with_booleans(POLICY, {"virt_use_nfs": True}))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_oracles_on_different_policies_take_turns(backend: str, nfs_on_policy: Path) -> None:
    default = PolicyOracle(POLICY, backend=backend, cache_size=0)
    nfs_on = PolicyOracle(nfs_on_policy, backend=backend, cache_size=0)
    assert default.digest != nfs_on.digest
    nfs = img("s0", "nfs_t")
    for _ in range(3):
        assert default.decide(VM, nfs, "file", ["read"]).reason is Reason.BOOLEAN
        assert nfs_on.decide(VM, nfs, "file", ["read"]).allowed
        # The MCS constraint is the same in both.
        assert nfs_on.decide(VM, img("s0:c3,c4"), "file", ["write"]).reason is Reason.CONSTRAINT
    assert nfs_on.granting_booleans(VM, nfs, "file", ["read"]) == (("virt_use_nfs", True),)
    assert default.granting_booleans(VM, nfs, "file", ["read"]) == ()


def test_oracles_on_the_same_policy_share_the_loaded_copy() -> None:
    a = PolicyOracle(POLICY)
    b = PolicyOracle(POLICY)
    assert a.digest == b.digest
    assert a.decide(VM, img("s0:c1,c2"), "file", ["write"]) == b.decide(
        VM, img("s0:c1,c2"), "file", ["write"]
    )


def test_policy_with_booleans_refuses_unknown_boolean() -> None:
    with pytest.raises(PolicyError, match="no_such_bool"):
        policy_with_booleans(POLICY, {"no_such_bool": True})


def test_granting_booleans_for_an_allow_through_a_default_on_boolean() -> None:
    o = PolicyOracle(POLICY)
    spool = "system_u:object_r:mail_spool_t:s0"
    local = "system_u:system_r:postfix_local_t:s0"
    assert o.decide(local, spool, "file", ["write"]).allowed
    assert o.granting_booleans(local, spool, "file", ["write"]) == (
        ("postfix_local_write_mail_spool", True),
    )
    # Granted by plain rules: no boolean involved.
    assert o.granting_booleans(VM, img("s0:c1,c2"), "file", ["write"]) == ()
    assert o.granting_booleans("bad", img("s0"), "file", ["write"]) == ()


def test_file_access_helpers(oracle: PolicyOracle) -> None:
    assert Access.READ.perms() == ("read", "open", "getattr")
    assert set(Access.READ_WRITE.perms()) == {
        "read",
        "open",
        "getattr",
        "write",
        "append",
        "lock",
        "ioctl",
    }
    assert "search" in Access.READ.perms("dir")
    assert oracle.can_read_write(VM, img("s0:c1,c2"))
    assert oracle.can_read_write(VM, img("s0:c1,c2"), "blk_file")
    assert not oracle.can_read_write(VM, img("s0:c3,c4"))
    assert oracle.can_read(VM, img("s0", "public_content_t"))
    assert not oracle.can_read(VM, img("s0", "user_home_t"))
    assert oracle.can_read(VM, img("s0", "virt_content_t"))
    assert not oracle.can_read_write(VM, img("s0", "virt_content_t"))
    d = oracle.file_access(VM, img("s0:c3,c4"), Access.READ, "chr_file")
    assert d.reason is Reason.CONSTRAINT
    assert oracle.can_access(VM, img("s0:c2"), "file", ["read", "write"])


def test_tclass_for_mode(tmp_path: Path) -> None:
    import socket
    import stat

    f = tmp_path / "f"
    f.write_bytes(b"")
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(tmp_path / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        modes = {n: os.stat(tmp_path / n).st_mode for n in ("f", "fifo", "blk", "chr", "sock")}
    assert tclass_for_mode(modes["f"]) == "file"
    assert tclass_for_mode(modes["fifo"]) == "fifo_file"
    assert tclass_for_mode(modes["blk"]) == "blk_file"
    assert tclass_for_mode(modes["chr"]) == "chr_file"
    assert tclass_for_mode(modes["sock"]) == "sock_file"
    assert tclass_for_mode(os.stat(tmp_path).st_mode) == "dir"


def test_default_policy_path_is_the_installed_policy() -> None:
    assert default_policy_path() == POLICY
    assert PolicyOracle().path == POLICY


def test_default_policy_path_follows_selinuxtype_and_highest_version(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("# comment\nSELINUX=permissive\nSELINUXTYPE=mls\n")
    d = tmp_path / "mls" / "policy"
    d.mkdir(parents=True)
    for n in ("policy.31", "policy.33", "policy.9", "policy.bak"):
        (d / n).write_bytes(b"")
    assert default_policy_path(tmp_path) == d / "policy.33"
    (tmp_path / "config").write_text("SELINUXTYPE=other\n")
    assert default_policy_path(tmp_path) is None


def test_missing_policy_is_a_one_line_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "policy.33"
    with pytest.raises(PolicyError) as info:
        PolicyOracle(missing)
    text = str(info.value)
    assert str(missing) in text and "No such file or directory" in text
    assert "\n" not in text
    assert isinstance(info.value, SvirtError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_policy_is_refused(tmp_path: Path, backend: str) -> None:
    bad = tmp_path / "policy.33"
    bad.write_bytes(b"not a policy at all")
    with pytest.raises(PolicyError, match="not a binary SELinux policy"):
        PolicyOracle(bad, backend=backend)
    truncated = tmp_path / "policy.34"
    truncated.write_bytes(POLICY.read_bytes()[:100_000])
    with pytest.raises(PolicyError, match="libsepol refused it"):
        PolicyOracle(truncated, backend=backend)
    # The backend still answers for a good policy afterwards.
    good = PolicyOracle(POLICY, backend=backend)
    assert good.decide(VM, img("s0:c3,c4"), "file", ["write"]).reason is Reason.CONSTRAINT


def test_unknown_backend_name() -> None:
    with pytest.raises(PolicyError, match="unknown policy backend"):
        PolicyOracle(POLICY, backend="nope")


def test_oracles_on_two_policies_from_several_threads(nfs_on_policy: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    default = PolicyOracle(POLICY, cache_size=0)
    nfs_on = PolicyOracle(nfs_on_policy, cache_size=0)
    nfs = img("s0", "nfs_t")

    def ask(i: int) -> tuple[bool, bool]:
        o = nfs_on if i % 2 else default
        return bool(i % 2), o.decide(VM, nfs, "file", ["read"]).allowed

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(ask, range(40)))
    assert all(expected == got for expected, got in results)
