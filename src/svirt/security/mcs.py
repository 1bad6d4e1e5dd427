"""MCS category-pair allocation: O(1) at any occupancy, persistent, aware of static labels.

libvirt draws two random categories and retries while the pair is taken, without bound,
in a per-daemon in-memory set that ignores static labels (libvirt-security-spec §3.3).
svirt keeps the free pairs as a sparse Fisher–Yates permutation: positions ``[0, free)``
of a permutation of all pair indices hold the free pairs, so a uniform draw is one
random position and one swap, whatever the occupancy. Only entries that differ from the
identity are stored, so the structure costs O(reserved) space. :class:`MemoryPoolStore`
holds it in dicts; :class:`McsLedger` holds it in the state database so every svirt
process on the host (and a restarted one) shares it.

Static labels are recorded too. Domains that set the same static label share it (as
libvirt allows); a static label equal to a dynamic domain's level is refused; a
dynamic draw that a static label's categories dominate (the static VM could read its
files) is set aside as *blocked* for as long as that static label lives, and drawn again.
Each pair is set aside at most once, so allocation stays amortised O(1).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from svirt.context import Level, MLSRange, format_categories
from svirt.errors import PREFIX_INTERNAL, ContextError, SecurityError
from svirt.state.db import write_transaction

__all__ = [
    "McsLedger",
    "MemoryPoolStore",
    "PairSpace",
    "PoolStore",
    "Reservation",
    "SparsePool",
    "pair_count",
    "pair_from_index",
    "pair_index",
    "shared_static_refusal",
]

log = logging.getLogger(__name__)


def pair_count(ncats: int) -> int:
    return ncats * (ncats - 1) // 2


def pair_index(a: int, b: int) -> int:
    """Index of the pair (a, b), 0 ≤ a < b, in colexicographic order."""
    return b * (b - 1) // 2 + a


def pair_from_index(idx: int) -> tuple[int, int]:
    b = (1 + math.isqrt(8 * idx + 1)) // 2
    if b * (b - 1) // 2 > idx:
        b -= 1
    return idx - b * (b - 1) // 2, b


class PoolStore(Protocol):
    """Storage of a sparse permutation: get/set default to the identity."""

    def perm_get(self, pos: int) -> int: ...
    def perm_set(self, pos: int, idx: int) -> None: ...
    def where_get(self, idx: int) -> int: ...
    def where_set(self, idx: int, pos: int) -> None: ...
    def free_get(self) -> int: ...
    def free_set(self, free: int) -> None: ...


class MemoryPoolStore:
    def __init__(self, size: int) -> None:
        self._perm: dict[int, int] = {}
        self._where: dict[int, int] = {}
        self._free = size

    def perm_get(self, pos: int) -> int:
        return self._perm.get(pos, pos)

    def perm_set(self, pos: int, idx: int) -> None:
        if idx == pos:
            self._perm.pop(pos, None)
        else:
            self._perm[pos] = idx

    def where_get(self, idx: int) -> int:
        return self._where.get(idx, idx)

    def where_set(self, idx: int, pos: int) -> None:
        if idx == pos:
            self._where.pop(idx, None)
        else:
            self._where[idx] = pos

    def free_get(self) -> int:
        return self._free

    def free_set(self, free: int) -> None:
        self._free = free


class SparsePool:
    """A set of free integers in ``[0, size)`` with O(1) uniform draw, take and put."""

    def __init__(self, store: PoolStore, size: int) -> None:
        self.store = store
        self.size = size

    @property
    def free(self) -> int:
        return self.store.free_get()

    def _swap(self, p: int, q: int, ip: int | None = None) -> None:
        s = self.store
        ip = s.perm_get(p) if ip is None else ip
        iq = s.perm_get(q)
        s.perm_set(p, iq)
        s.where_set(iq, p)
        s.perm_set(q, ip)
        s.where_set(ip, q)

    def draw(self, rng: random.Random) -> int | None:
        """Take a uniformly chosen free value; None when none is left."""
        free = self.store.free_get()
        if free == 0:
            return None
        pos = rng.randrange(free)
        idx = self.store.perm_get(pos)
        self._swap(pos, free - 1, idx)
        self.store.free_set(free - 1)
        return idx

    def take(self, idx: int) -> bool:
        """Take a specific value; False when it is not free."""
        free = self.store.free_get()
        pos = self.store.where_get(idx)
        if pos >= free:
            return False
        self._swap(pos, free - 1)
        self.store.free_set(free - 1)
        return True

    def put(self, idx: int) -> bool:
        """Return a value to the pool; False when it was already free."""
        free = self.store.free_get()
        pos = self.store.where_get(idx)
        if pos < free:
            return False
        self._swap(pos, free)
        self.store.free_set(free + 1)
        return True


class _SqlPoolStore:
    """The pool's permutation in the state database (inside the caller's transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def perm_get(self, pos: int) -> int:
        row = self.conn.execute("SELECT idx FROM mcs_perm WHERE pos=?", (pos,)).fetchone()
        return int(row[0]) if row else pos

    def perm_set(self, pos: int, idx: int) -> None:
        if idx == pos:
            self.conn.execute("DELETE FROM mcs_perm WHERE pos=?", (pos,))
        else:
            self.conn.execute("INSERT OR REPLACE INTO mcs_perm(pos, idx) VALUES (?, ?)", (pos, idx))

    def where_get(self, idx: int) -> int:
        row = self.conn.execute("SELECT pos FROM mcs_where WHERE idx=?", (idx,)).fetchone()
        return int(row[0]) if row else idx

    def where_set(self, idx: int, pos: int) -> None:
        if idx == pos:
            self.conn.execute("DELETE FROM mcs_where WHERE idx=?", (idx,))
        else:
            self.conn.execute(
                "INSERT OR REPLACE INTO mcs_where(idx, pos) VALUES (?, ?)", (idx, pos)
            )

    def free_get(self) -> int:
        row = self.conn.execute("SELECT value FROM mcs_meta WHERE key='free'").fetchone()
        return int(row[0])

    def free_set(self, free: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO mcs_meta(key, value) VALUES ('free', ?)", (str(free),)
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    level: str
    domain: str
    kind: str  # dynamic, static, blocked
    created: float


@dataclass(frozen=True, slots=True)
class PairSpace:
    """The category pairs of one sensitivity and category range, numbered 0..size-1.

    The one place that turns a level into a pair index and back, for every ledger store.
    """

    sens: int
    cat_min: int
    cat_max: int

    @property
    def size(self) -> int:
        return pair_count(self.cat_max - self.cat_min + 1)

    def index_of(self, level: str) -> int | None:
        """The index of a level that is exactly one pair of this range, else None."""
        try:
            rng = MLSRange.parse(level)
        except ContextError:
            return None
        cats = sorted(rng.low.categories)
        if (
            rng.low != rng.high
            or rng.low.sensitivity != self.sens
            or len(cats) != 2
            or cats[0] < self.cat_min
            or cats[1] > self.cat_max
        ):
            return None
        return pair_index(cats[0] - self.cat_min, cats[1] - self.cat_min)

    def level_of(self, idx: int) -> str:
        a, b = pair_from_index(idx)
        cats = frozenset({a + self.cat_min, b + self.cat_min})
        return f"s{self.sens}:{format_categories(cats)}"

    def categories_of(self, idx: int) -> frozenset[int]:
        a, b = pair_from_index(idx)
        return frozenset({a + self.cat_min, b + self.cat_min})


def static_reach(
    statics: list[tuple[str, str]], cat_min: int, cat_max: int
) -> list[tuple[str, frozenset[int]]]:
    """(owner, categories) of the static labels that dominate some pairs but not all;
    one that dominates the whole range is left out with a warning (libvirt allows
    dynamic domains beside it)."""
    whole = frozenset(range(cat_min, cat_max + 1))
    out = []
    for level, owner in statics:
        cats = _static_categories(level)
        if whole <= cats:
            log.warning(
                "the static label of domain %s dominates every category pair: "
                "dynamic domains are not isolated from it",
                owner,
            )
            continue
        out.append((owner, cats))
    return out


def _static_categories(level: str) -> frozenset[int]:
    """The categories a static label's process can reach: those of its high level."""
    return MLSRange.parse(level).high.categories


def shared_static_refusal(
    level: str, label: str | None, static: bool, holders: list[tuple[str, str]], domain: str
) -> str | None:
    """Why ``domain`` may not take ``level`` beside its ``holders`` ((domain, kind) of
    the other domains holding it; a fleet names them ``D on host H``), or None when it
    may: the one rule of shared levels, for every ledger store.

    Domains share a level only when every one of them set it as a static label, on
    purpose (libvirt-security-spec §4; the seed's "two or more VMs with the same security
    context"). A static label equal to a *dynamic* domain's level is refused although
    libvirt allows it: that domain never asked to share, and its files would open to the
    static one. A dynamic level found again on reconnect keeps libvirt's text."""
    others = [(d, k) for d, k in holders if d != domain]
    if not others:
        return None
    shown = label or level
    if static and all(k == "static" for _d, k in others):
        return None
    if static:
        dyn = next(d for d, k in others if k != "static")
        return (
            PREFIX_INTERNAL + f"static label {shown} has the MCS level {level} that running "
            f"domain {dyn} holds as its own dynamic level; refusing: sharing it would open "
            "that domain's files to this one (only domains that all set the same static "
            "label share a level)"
        )
    return (
        PREFIX_INTERNAL
        + f"MCS level for existing domain label {shown} already reserved (by domain "
        + ", ".join(d for d, _k in others)
        + ")"
    )


class McsLedger:
    """The host's MCS reservations, persisted in the state database.

    ``sens``/``cat_min``/``cat_max`` come from the daemon's context (spec §3.2). The
    pool covers the pairs of that range; if the range changes, the pool is rebuilt from
    the reservations.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        sens: int,
        cat_min: int,
        cat_max: int,
        rng: random.Random | None = None,
    ) -> None:
        if cat_max - cat_min + 1 < 8:
            raise SecurityError(PREFIX_INTERNAL + f"Category range c{cat_min}-c{cat_max} too small")
        self.conn = conn
        self.sens = sens
        self.cat_min = cat_min
        self.cat_max = cat_max
        self.rng = rng or random.SystemRandom()
        self.space = PairSpace(sens, cat_min, cat_max)
        self.size = self.space.size
        self.pool = SparsePool(_SqlPoolStore(conn), self.size)
        self._ensure_pool()

    # --- pool bookkeeping ---------------------------------------------------------------

    @property
    def _range_key(self) -> str:
        return f"s{self.sens}:c{self.cat_min}.c{self.cat_max}"

    def _ensure_pool(self) -> None:
        with write_transaction(self.conn):
            # Every allocation reads the static labels; without this index that read
            # scans every reservation, and allocation cost grows with occupancy.
            self.conn.execute(
                "CREATE INDEX IF NOT EXISTS mcs_reservations_static "
                "ON mcs_reservations(level) WHERE kind='static'"
            )
            row = self.conn.execute("SELECT value FROM mcs_meta WHERE key='range'").fetchone()
            if row is not None and row[0] == self._range_key:
                return
            self.conn.execute("DELETE FROM mcs_perm")
            self.conn.execute("DELETE FROM mcs_where")
            self.conn.execute(
                "INSERT OR REPLACE INTO mcs_meta VALUES ('range', ?)", (self._range_key,)
            )
            self.conn.execute(
                "INSERT OR REPLACE INTO mcs_meta VALUES ('free', ?)", (str(self.size),)
            )
            self.conn.execute("UPDATE mcs_reservations SET pair=NULL")
            rows = self.conn.execute("SELECT level, domain FROM mcs_reservations").fetchall()
            for level, domain in rows:
                idx = self._pair_of(level)
                # A shared static label's pair goes to one of its rows (the first).
                if idx is not None and self.pool.take(idx):
                    self.conn.execute(
                        "UPDATE mcs_reservations SET pair=? WHERE level=? AND domain=?",
                        (idx, level, domain),
                    )

    def _pair_of(self, level: str) -> int | None:
        return self.space.index_of(level)

    def _level_of(self, idx: int) -> str:
        return self.space.level_of(idx)

    # --- public operations --------------------------------------------------------------

    def allocate(self, domain: str) -> str:
        """Draw a free pair for a dynamic label, e.g. ``s0:c41,c264``."""
        with write_transaction(self.conn):
            # Blocking every pair would stop all dynamic domains; libvirt allows them, so
            # svirt does too, but says what it means for isolation (static_reach).
            statics = static_reach(
                self.conn.execute(
                    "SELECT level, domain FROM mcs_reservations WHERE kind='static'"
                ).fetchall(),
                self.cat_min,
                self.cat_max,
            )
            while True:
                idx = self.pool.draw(self.rng)
                if idx is None:
                    break
                level = self._level_of(idx)
                cats = Level.parse(level).categories
                blocker = next((o for o, s in statics if cats <= s), None)
                kind, owner = ("blocked", blocker) if blocker else ("dynamic", domain)
                self.conn.execute(
                    "INSERT INTO mcs_reservations(level, domain, kind, pair, created, pid) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (level, owner, kind, idx, time.time(), os.getpid()),
                )
                if blocker is None:
                    return level
        # Failing leaves the pairs set aside above committed, so the next attempt does
        # not draw them all again.
        raise SecurityError(
            f"no free MCS category pair in c{self.cat_min}.c{self.cat_max}: all "
            f"{self.size} pairs are reserved or dominated by static labels"
        )

    def reserve(
        self, domain: str, level: str, *, static: bool = False, label: str | None = None
    ) -> None:
        """Record a level already in use: a static label, or a running domain's dynamic
        label on reconnect. Idempotent for the same domain. A static label equal to
        other domains' *static* label is shared with them (libvirt allows it); any other
        level held by another domain is refused (:func:`shared_static_refusal`)."""
        canonical = str(MLSRange.parse(level))
        with write_transaction(self.conn):
            rows = self.conn.execute(
                "SELECT domain, kind FROM mcs_reservations WHERE level=?", (canonical,)
            ).fetchall()
            if any(d == domain and k != "blocked" for d, k in rows):
                return
            if any(k == "blocked" for _d, k in rows):
                # A pair set aside for a static label: it is not in use by a VM.
                self.conn.execute(
                    "DELETE FROM mcs_reservations WHERE level=? AND kind='blocked'", (canonical,)
                )
                self.pool.put(self._pair_of(canonical) or 0)
            holders = [(str(d), str(k)) for d, k in rows if k != "blocked"]
            refusal = shared_static_refusal(canonical, label, static, holders, domain)
            if refusal is not None:
                raise SecurityError(refusal)
            idx = self._pair_of(canonical)
            if idx is not None and not self.pool.take(idx):
                idx = None  # outside the pool, or a shared label whose pair is taken
            self.conn.execute(
                "INSERT INTO mcs_reservations(level, domain, kind, pair, created, pid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    canonical,
                    domain,
                    "static" if static else "dynamic",
                    idx,
                    time.time(),
                    os.getpid(),
                ),
            )
            if holders:
                log.info(
                    "domain %s shares the static label %s with %s (by configuration)",
                    domain,
                    label or canonical,
                    ", ".join(d for d, _k in holders),
                )

    def release(self, domain: str) -> list[str]:
        """Release every level of a domain, and the pairs its static label blocked. A
        static label other domains still share keeps its pair and what it blocks: both
        pass to one of them."""
        with write_transaction(self.conn):
            rows = self.conn.execute(
                "SELECT level, pair, kind FROM mcs_reservations WHERE domain=?", (domain,)
            ).fetchall()
            heirs: dict[str, str] = {}
            for level, _pair, kind in rows:
                row = self.conn.execute(
                    "SELECT domain FROM mcs_reservations WHERE level=? AND kind='static' "
                    "AND domain!=? ORDER BY created LIMIT 1",
                    (level, domain),
                ).fetchone()
                if kind == "static" and row is not None:
                    heirs[str(level)] = str(row[0])
            heir = next(iter(heirs.values()), None)
            released = []
            for level, pair, kind in rows:
                if kind == "blocked" and heir is not None:
                    # Still dominated by the same static label, now held by the heir.
                    self.conn.execute(
                        "UPDATE mcs_reservations SET domain=? WHERE level=? AND domain=?",
                        (heir, level, domain),
                    )
                    continue
                released.append(str(level))
                if pair is None:
                    continue
                if kind == "static" and level in heirs:
                    self.conn.execute(
                        "UPDATE mcs_reservations SET pair=? WHERE level=? AND domain=?",
                        (pair, level, heirs[level]),
                    )
                    continue
                self.pool.put(int(pair))
            self.conn.execute("DELETE FROM mcs_reservations WHERE domain=?", (domain,))
        return released

    def reservations(self) -> Iterator[Reservation]:
        for level, domain, kind, created in self.conn.execute(
            "SELECT level, domain, kind, created FROM mcs_reservations ORDER BY created"
        ):
            yield Reservation(level, domain, kind, created)

    def owner(self, level: str) -> str | None:
        row = self.conn.execute(
            "SELECT domain FROM mcs_reservations WHERE level=? AND kind!='blocked'",
            (str(MLSRange.parse(level)),),
        ).fetchone()
        return str(row[0]) if row else None

    def sharers(self, level: str) -> list[str]:
        """Every domain holding ``level`` (several only for a shared static label)."""
        return [
            str(r[0])
            for r in self.conn.execute(
                "SELECT domain FROM mcs_reservations WHERE level=? AND kind!='blocked' "
                "ORDER BY created",
                (str(MLSRange.parse(level)),),
            )
        ]

    def holders(self) -> list[tuple[str, int]]:
        """(domain, pid) of every domain holding a level, with the creating process."""
        return [
            (str(d), int(p))
            for d, p in self.conn.execute(
                "SELECT DISTINCT domain, pid FROM mcs_reservations WHERE kind!='blocked'"
            )
        ]

    def preview(self) -> AbstractContextManager[None]:
        # Everything is in the caller's database transaction, which it rolls back.
        return contextlib.nullcontext()

    def held_elsewhere(self, level: str) -> str | None:
        return None  # one host: nobody else

    def record_files(self, domain: str, paths: list[str]) -> None:
        return None  # one host: the doctor sees its own domains

    def file_holders(self, path: str) -> list[tuple[str, str]]:
        return []

    def levels_of(self, domain: str) -> list[str]:
        return [
            str(r[0])
            for r in self.conn.execute(
                "SELECT level FROM mcs_reservations WHERE domain=? AND kind!='blocked'", (domain,)
            )
        ]
