"""The binary policy reader against setools' view of the same file (the reference
policy installed by scripts/setup.sh), and against libsepol's own decisions."""

from __future__ import annotations

from pathlib import Path

import pytest
import setools

from svirt.errors import PolicyError
from svirt.policy.binary import BinaryPolicy, read_binary_policy
from svirt.policy.oracle import PolicyOracle, Reason

pytestmark = pytest.mark.policy

POLICY = Path("/etc/selinux/default/policy/policy.33")


@pytest.fixture(scope="module")
def binary() -> BinaryPolicy:
    return read_binary_policy(POLICY.read_bytes())


@pytest.fixture(scope="module")
def setools_policy() -> setools.SELinuxPolicy:
    return setools.SELinuxPolicy(str(POLICY))


def test_header(binary: BinaryPolicy) -> None:
    assert binary.version == 33
    assert binary.mls


def test_booleans_match_setools(
    binary: BinaryPolicy, setools_policy: setools.SELinuxPolicy
) -> None:
    expected = {b.name: bool(b.state) for b in setools_policy.bools()}
    assert {b.name: b.default for b in binary.booleans} == expected
    assert [b.value for b in binary.booleans] == sorted(b.value for b in binary.booleans)


def test_types_attributes_and_classes_match_setools(
    binary: BinaryPolicy, setools_policy: setools.SELinuxPolicy
) -> None:
    types = {str(t) for t in setools_policy.types()}
    attributes = {str(a) for a in setools_policy.typeattributes()}
    assert types <= set(binary.types)
    assert {n for n, v in binary.types.items() if v in binary.attributes} == attributes
    for t in ("svirt_t", "svirt_image_t", "virt_content_t", "nfs_t"):
        value = binary.type_value(t)
        assert value is not None
        names = {n for n, v in binary.types.items() if v in binary._attrs(value)}
        want = {str(a) for a in setools_policy.lookup_type(t).attributes()} | {t}
        assert want <= names
    for cls in setools_policy.classes():
        value = binary.class_value(str(cls))
        assert value is not None
        perms = set(cls.perms)
        try:
            perms |= set(cls.common.perms)
        except setools.exception.NoCommon:
            pass
        assert set(binary.class_perms[value]) == perms


def test_conditional_rules_match_setools(
    binary: BinaryPolicy, setools_policy: setools.SELinuxPolicy
) -> None:
    rules = [r for r in setools_policy.terules() if _is_conditional(r)]
    allow = [r for r in rules if r.ruletype == setools.TERuletype.allow]
    # setools shows one rule per (source, target, class) and branch; the binary too.
    ours = sum(
        1
        for node in binary.cond_nodes
        for rule in (*node.true_rules, *node.false_rules)
        if rule[3] & 1
    )
    assert ours == len(allow)
    assert len(binary.cond_nodes) == len(list(setools_policy.conditionals()))
    # Each block's booleans are the ones setools names for it.
    expected = sorted(sorted(str(b) for b in c.booleans) for c in setools_policy.conditionals())
    names = {b.value: b.name for b in binary.booleans}
    ours_bools = sorted(sorted(names[v] for v in n.booleans) for n in binary.cond_nodes)
    assert ours_bools == expected


def _is_conditional(rule: setools.policyrep.AVRule) -> bool:
    try:
        rule.conditional  # noqa: B018 - raises when the rule is unconditional
    except setools.exception.RuleNotConditional:
        return False
    return True


def test_boolean_candidates_and_granting_booleans(binary: BinaryPolicy) -> None:
    svirt = binary.type_value("svirt_t")
    nfs = binary.type_value("nfs_t")
    file = binary.class_value("file")
    assert svirt and nfs and file
    read = binary.perm_bits(file, ["read"])
    assert read
    candidates = binary.boolean_candidates(svirt, nfs, file, read)
    assert "virt_use_nfs" in candidates
    assert binary.granting_booleans(svirt, nfs, file, read) == ()  # virt_use_nfs is off
    assert binary.perm_bits(file, ["read", "nope"]) is None


def test_constraint_evaluation_matches_libsepol(binary: BinaryPolicy) -> None:
    """Where type enforcement allows, passes_after_te() is libsepol's verdict."""
    oracle = PolicyOracle(POLICY, backend="libsepol")
    file = binary.class_value("file")
    process = binary.class_value("process")
    assert file and process
    cases = [
        ("system_u:system_r:svirt_t:s0:c1,c2", f"system_u:object_r:svirt_image_t:{lvl}", "file")
        for lvl in ("s0", "s0:c1", "s0:c1,c2", "s0:c3,c4", "s0:c1,c3", "s0-s0:c0.c1023")
    ] + [
        (
            "system_u:system_r:unconfined_t:s0-s0:c0.c1023",
            "system_u:object_r:svirt_image_t:s0:c3,c4",
            "file",
        ),
        (
            "system_u:system_r:virtd_t:s0-s0:c0.c1023",
            "system_u:system_r:svirt_t:s0:c1,c2",
            "process",
        ),
        (
            "system_u:system_r:virtd_t:s0-s0:c0.c1023",
            "system_u:object_r:svirt_t:s0:c1,c2",
            "process",
        ),
    ]
    for scon, tcon, tclass in cases:
        perms = ["transition"] if tclass == "process" else ["read", "write"]
        d = oracle.decide(scon, tcon, tclass, perms)
        assert d.reason in (Reason.ALLOW, Reason.CONSTRAINT), (scon, tcon)
        cls = binary.class_value(tclass)
        assert cls
        av = binary.perm_bits(cls, perms)
        assert av
        assert binary.passes_after_te(scon, tcon, cls, av) is d.allowed, (scon, tcon)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"\x00" * 64, "bad magic"),
        (POLICY.read_bytes()[:4] + b"\x08\x00\x00\x00XE Linux" + b"\x00" * 32, "SELinux target"),
        (POLICY.read_bytes()[:200_000], "truncated"),
        (POLICY.read_bytes() + b"\x00\x00", "trailing"),
    ],
    ids=["empty", "magic", "target", "truncated", "trailing"],
)
def test_malformed_policies_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        read_binary_policy(data)


def test_unsupported_version_is_named() -> None:
    data = bytearray(POLICY.read_bytes())
    data[16:20] = (15).to_bytes(4, "little")
    with pytest.raises(PolicyError, match="unsupported binary policy version 15"):
        read_binary_policy(bytes(data))
