"""Security contexts, levels, ranges, category sets: parse, canonical format, dominance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svirt.context import (
    Level,
    MLSRange,
    SecurityContext,
    format_categories,
    parse_categories,
)
from svirt.errors import ContextError


@pytest.mark.parametrize(
    ("text", "cats"),
    [
        ("c0", {0}),
        ("c1,c5.c9", {1, 5, 6, 7, 8, 9}),
        ("c0.c1023", set(range(1024))),
        ("c3,c1", {1, 3}),
        ("c1,c1", {1}),
    ],
)
def test_parse_categories(text: str, cats: set[int]) -> None:
    assert parse_categories(text) == frozenset(cats)


@pytest.mark.parametrize(
    ("cats", "text"),
    [
        ({1, 2}, "c1,c2"),  # two adjacent stay a pair, as the kernel prints
        ({1, 2, 3}, "c1.c3"),
        ({0, 2, 3, 4, 9}, "c0,c2.c4,c9"),
        ({5}, "c5"),
        (set(range(1024)), "c0.c1023"),
    ],
)
def test_format_categories_canonical(cats: set[int], text: str) -> None:
    assert format_categories(frozenset(cats)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("c1024", "out of range c0–c1023"),
        ("c-1", "invalid category"),
        ("c5.c1", "is not above"),
        ("c5.c5", "is not above"),
        ("c1,", "invalid category ''"),
        ("x1", "invalid category"),
        ("c01", "invalid category"),
    ],
)
def test_parse_categories_errors(text: str, message: str) -> None:
    with pytest.raises(ContextError, match=message):
        parse_categories(text)


def test_level_bounds() -> None:
    assert str(Level.parse("s15:c1023")) == "s15:c1023"
    with pytest.raises(ContextError, match="out of range s0–s15"):
        Level.parse("s16")
    with pytest.raises(ContextError, match="empty category set"):
        Level.parse("s0:")
    with pytest.raises(ContextError):
        Level(16)
    with pytest.raises(ContextError):
        Level(0, frozenset({1024}))


def test_range_parse_and_format() -> None:
    r = MLSRange.parse("s0-s0:c0.c1023")
    assert r.low == Level(0)
    assert r.high == Level(0, frozenset(range(1024)))
    assert str(r) == "s0-s0:c0.c1023"
    assert str(MLSRange.parse("s0-s0")) == "s0"  # equal levels print once
    with pytest.raises(ContextError, match="does not dominate"):
        MLSRange.parse("s1-s0")
    with pytest.raises(ContextError, match="does not dominate"):
        MLSRange.parse("s0:c1-s0:c2")


def test_context_parse_format() -> None:
    c = SecurityContext.parse("system_u:system_r:svirt_t:s0:c392,c662")
    assert (c.user, c.role, c.type) == ("system_u", "system_r", "svirt_t")
    assert c.level == Level(0, frozenset({392, 662}))
    assert str(c) == "system_u:system_r:svirt_t:s0:c392,c662"
    assert str(SecurityContext.parse("a_u:b_r:c_t")) == "a_u:b_r:c_t"
    assert SecurityContext.parse("a_u:b_r:c_t").range is None


@pytest.mark.parametrize(
    "text",
    ["", "a:b", "a:b:c:", "a:b:c:s0:c1024", "a:b:c d", "1a:b:c", "a:b:c:s0-", "a::c"],
)
def test_context_invalid(text: str) -> None:
    with pytest.raises(ContextError):
        SecurityContext.parse(text)


def test_context_substitution() -> None:
    base = SecurityContext.parse("system_u:object_r:svirt_image_t:s0")
    rng = MLSRange.parse("s0:c1,c2")
    img = base.with_user("unconfined_u").with_range(rng)
    assert str(img) == "unconfined_u:object_r:svirt_image_t:s0:c1,c2"
    assert (
        str(img.with_type("virt_content_t").with_role("r"))
        == "unconfined_u:r:virt_content_t:s0:c1,c2"
    )


def test_dominance_examples_from_the_seed() -> None:
    # Seed 000: VMs s0:c951,c961 and s0:c851,c961 can both reach a disk at s0:c961.
    vm1, vm2 = Level.parse("s0:c951,c961"), Level.parse("s0:c851,c961")
    shared = Level.parse("s0:c961")
    assert vm1.dominates(shared) and vm2.dominates(shared)
    assert not vm1.dominates(vm2) and not vm2.dominates(vm1)
    assert vm1.dominates(Level.parse("s0"))


def test_range_contains() -> None:
    daemon = MLSRange.parse("s0-s0:c0.c1023")
    assert daemon.contains(MLSRange.parse("s0:c1,c2"))
    assert not MLSRange.parse("s0:c1,c2").contains(daemon)
    assert not MLSRange.parse("s0-s0:c0.c10").contains(MLSRange.parse("s0:c11"))


# --- property tests --------------------------------------------------------------------

cats_st = st.frozensets(st.integers(0, 1023), max_size=40)
level_st = st.builds(Level, st.integers(0, 15), cats_st)


@given(cats_st)
def test_format_parse_categories_identity(cats: frozenset[int]) -> None:
    if cats:
        text = format_categories(cats)
        assert parse_categories(text) == cats
        assert format_categories(parse_categories(text)) == text


@given(level_st, level_st)
def test_canonical_context_round_trip(low: Level, extra: Level) -> None:
    high = Level(max(low.sensitivity, extra.sensitivity), low.categories | extra.categories)
    text = f"system_u:object_r:svirt_image_t:{MLSRange(low, high)}"
    assert str(SecurityContext.parse(text)) == text


@given(level_st)
def test_dominance_reflexive(a: Level) -> None:
    assert a.dominates(a)


@given(level_st, level_st)
def test_dominance_antisymmetric(a: Level, b: Level) -> None:
    if a.dominates(b) and b.dominates(a):
        assert a == b


@given(level_st, level_st, level_st)
def test_dominance_transitive(a: Level, b: Level, c: Level) -> None:
    if a.dominates(b) and b.dominates(c):
        assert a.dominates(c)
