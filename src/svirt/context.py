"""SELinux security contexts, MLS/MCS levels, ranges and category sets (pure).

A context is ``user:role:type[:range]``; a range is ``low[-high]``; a level is
``sN[:cats]``; a category set is written as a comma list whose items are single
categories or dot-ranges (``c0.c1023``, ``c1,c5.c9``).

Formatting is canonical, as the kernel prints contexts: categories sorted, a run of
three or more consecutive categories as ``cA.cB``, a run of two as ``cA,cB``, and a
range whose high level equals its low level printed as the low level alone.

Bounds are those of an MCS/MLS reference policy: sensitivities s0–s15, categories
c0–c1023.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Self

from svirt.errors import ContextError

__all__ = [
    "MAX_CATEGORY",
    "MAX_SENSITIVITY",
    "Level",
    "MLSRange",
    "SecurityContext",
    "format_categories",
    "parse_categories",
]

MAX_SENSITIVITY = 15
MAX_CATEGORY = 1023

# SELinux identifiers (users, roles, types): what checkpolicy accepts.
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*\Z")
_SENS = re.compile(r"s(0|[1-9][0-9]*)\Z")
_CAT = re.compile(r"c(0|[1-9][0-9]*)\Z")


def _parse_sensitivity(text: str) -> int:
    m = _SENS.match(text)
    if not m:
        raise ContextError(f"invalid sensitivity '{text}': expected s0–s{MAX_SENSITIVITY}")
    value = int(m.group(1))
    if value > MAX_SENSITIVITY:
        raise ContextError(f"sensitivity '{text}' out of range s0–s{MAX_SENSITIVITY}")
    return value


def _parse_category(text: str) -> int:
    m = _CAT.match(text)
    if not m:
        raise ContextError(f"invalid category '{text}': expected c0–c{MAX_CATEGORY}")
    value = int(m.group(1))
    if value > MAX_CATEGORY:
        raise ContextError(f"category '{text}' out of range c0–c{MAX_CATEGORY}")
    return value


def parse_categories(text: str) -> frozenset[int]:
    """Parse ``c1,c5.c9`` into {1, 5, 6, 7, 8, 9}. Empty items and reversed ranges fail."""
    cats: set[int] = set()
    for item in text.split(","):
        if "." in item:
            first, _, last = item.partition(".")
            lo, hi = _parse_category(first), _parse_category(last)
            if hi <= lo:
                raise ContextError(f"invalid category range '{item}': c{hi} is not above c{lo}")
            cats.update(range(lo, hi + 1))
        else:
            cats.add(_parse_category(item))
    return frozenset(cats)


def format_categories(cats: frozenset[int]) -> str:
    """Canonical kernel form: runs of three or more as ``cA.cB``, pairs as ``cA,cB``."""
    ordered = sorted(cats)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"c{ordered[i]}.c{ordered[j]}")
        else:
            parts.extend(f"c{c}" for c in ordered[i : j + 1])
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Level:
    """An MLS level: a sensitivity and a set of categories."""

    sensitivity: int = 0
    categories: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.sensitivity <= MAX_SENSITIVITY:
            raise ContextError(
                f"sensitivity s{self.sensitivity} out of range s0–s{MAX_SENSITIVITY}"
            )
        for c in self.categories:
            if not 0 <= c <= MAX_CATEGORY:
                raise ContextError(f"category c{c} out of range c0–c{MAX_CATEGORY}")

    @classmethod
    def parse(cls, text: str) -> Self:
        sens, sep, cats = text.partition(":")
        if sep and not cats:
            raise ContextError(f"invalid level '{text}': empty category set")
        return cls(_parse_sensitivity(sens), parse_categories(cats) if sep else frozenset())

    def __str__(self) -> str:
        if self.categories:
            return f"s{self.sensitivity}:{format_categories(self.categories)}"
        return f"s{self.sensitivity}"

    def dominates(self, other: Level) -> bool:
        """True when this level is at or above ``other``: higher-or-equal sensitivity and
        a superset of its categories (the MLS/MCS dominance relation)."""
        return self.sensitivity >= other.sensitivity and self.categories >= other.categories


@dataclass(frozen=True, slots=True)
class MLSRange:
    """An MLS range ``low[-high]``; ``high`` must dominate ``low``."""

    low: Level
    high: Level

    def __post_init__(self) -> None:
        if not self.high.dominates(self.low):
            raise ContextError(
                f"invalid range: high level {self.high} does not dominate {self.low}"
            )

    @classmethod
    def parse(cls, text: str) -> Self:
        low, sep, high = text.partition("-")
        if sep and not high:
            raise ContextError(f"invalid range '{text}': empty high level")
        lo = Level.parse(low)
        return cls(lo, Level.parse(high) if sep else lo)

    @classmethod
    def single(cls, level: Level) -> Self:
        return cls(level, level)

    def __str__(self) -> str:
        if self.high == self.low:
            return str(self.low)
        return f"{self.low}-{self.high}"

    def contains(self, other: MLSRange) -> bool:
        """True when ``other`` lies within this range (low ≤ other.low, other.high ≤ high)."""
        return other.low.dominates(self.low) and self.high.dominates(other.high)


@dataclass(frozen=True, slots=True)
class SecurityContext:
    """``user:role:type[:range]``. ``range`` is None for a policy without MLS."""

    user: str
    role: str
    type: str
    range: MLSRange | None = None

    def __post_init__(self) -> None:
        for field, value in (("user", self.user), ("role", self.role), ("type", self.type)):
            if not _IDENT.match(value):
                raise ContextError(f"invalid SELinux {field} '{value}'")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a context string; the range is everything after the third ``:``."""
        if not isinstance(text, str) or not text:
            raise ContextError("empty security context")
        if any(ch.isspace() for ch in text) or "\0" in text:
            raise ContextError(f"invalid security context '{text}': contains whitespace")
        parts = text.split(":", 3)
        if len(parts) < 3:
            raise ContextError(
                f"invalid security context '{text}': expected user:role:type[:range]"
            )
        user, role, type_ = parts[0], parts[1], parts[2]
        try:
            rng = MLSRange.parse(parts[3]) if len(parts) == 4 else None
            return cls(user, role, type_, rng)
        except ContextError as exc:
            raise ContextError(f"invalid security context '{text}': {exc.message}") from None

    def __str__(self) -> str:
        base = f"{self.user}:{self.role}:{self.type}"
        return f"{base}:{self.range}" if self.range is not None else base

    @property
    def level(self) -> Level | None:
        """The low (effective) level, or None without MLS."""
        return self.range.low if self.range is not None else None

    def with_user(self, user: str) -> SecurityContext:
        return replace(self, user=user)

    def with_role(self, role: str) -> SecurityContext:
        return replace(self, role=role)

    def with_type(self, type_: str) -> SecurityContext:
        return replace(self, type=type_)

    def with_range(self, rng: MLSRange | None) -> SecurityContext:
        return replace(self, range=rng)
