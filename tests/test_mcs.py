"""The MCS allocator and ledger (issue 3, item 3; libvirt-security-spec §3.3, §3.6).

Real sqlite state databases in tmp_path, real second processes. Small category ranges
(c0.c7: 28 pairs) make exhaustion and "every pair once" checks exact.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from svirt.context import Level
from svirt.errors import SecurityError
from svirt.security.mcs import (
    McsLedger,
    MemoryPoolStore,
    SparsePool,
    pair_count,
    pair_from_index,
    pair_index,
)
from svirt.state.db import connect, write_transaction


def ledger(state: Path, cat_max: int = 7, *, seed: int | None = 1, cat_min: int = 0) -> McsLedger:
    rng = random.Random(seed) if seed is not None else None
    return McsLedger(connect(state), 0, cat_min, cat_max, rng=rng)


def cats(level: str) -> tuple[int, int]:
    c = sorted(Level.parse(level).categories)
    assert len(c) == 2, level
    return c[0], c[1]


# --- pair numbering ---------------------------------------------------------------------


def test_pair_numbering_is_a_bijection_on_small_ranges() -> None:
    for n in range(2, 40):
        pairs = [pair_from_index(i) for i in range(pair_count(n))]
        assert sorted(pairs) == sorted((a, b) for b in range(n) for a in range(b))
        assert [pair_index(a, b) for a, b in pairs] == list(range(pair_count(n)))


@given(
    st.integers(min_value=0, max_value=1023).flatmap(
        lambda b: st.tuples(st.integers(0, b - 1) if b else st.nothing(), st.just(b))
    )
)
def test_pair_numbering_round_trips_on_the_full_range(pair: tuple[int, int]) -> None:
    a, b = pair
    idx = pair_index(a, b)
    assert 0 <= idx < pair_count(1024)
    assert pair_from_index(idx) == (a, b)


# --- the in-memory pool -----------------------------------------------------------------


class PoolMachine(RuleBasedStateMachine):
    """SparsePool against a plain set of free values."""

    @initialize(size=st.integers(min_value=1, max_value=60), seed=st.integers(0, 2**32))
    def start(self, size: int, seed: int) -> None:
        self.size = size
        self.pool = SparsePool(MemoryPoolStore(size), size)
        self.model = set(range(size))
        self.rng = random.Random(seed)

    @rule()
    def draw(self) -> None:
        got = self.pool.draw(self.rng)
        if not self.model:
            assert got is None
        else:
            assert got in self.model
            self.model.discard(got)

    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        idx = data.draw(st.integers(0, self.size - 1))
        assert self.pool.take(idx) is (idx in self.model)
        self.model.discard(idx)

    @rule(data=st.data())
    def put(self, data: st.DataObject) -> None:
        idx = data.draw(st.integers(0, self.size - 1))
        assert self.pool.put(idx) is (idx not in self.model)
        self.model.add(idx)

    @invariant()
    def free_matches(self) -> None:
        if hasattr(self, "pool"):
            assert self.pool.free == len(self.model)
            store = self.pool.store
            assert isinstance(store, MemoryPoolStore)
            # Sparse: only positions moved away from the identity are stored.
            assert len(store._perm) <= 2 * (self.size - len(self.model)) + 2 * self.size


TestSparsePool = PoolMachine.TestCase
TestSparsePool.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_pool_draws_every_value_once_then_none() -> None:
    pool = SparsePool(MemoryPoolStore(100), 100)
    rng = random.Random(7)
    drawn = [pool.draw(rng) for _ in range(100)]
    assert sorted(d for d in drawn if d is not None) == list(range(100))
    assert pool.draw(rng) is None


def test_pool_stays_sparse_at_low_occupancy() -> None:
    size = pair_count(1024)
    store = MemoryPoolStore(size)
    pool = SparsePool(store, size)
    rng = random.Random(3)
    for _ in range(100):
        pool.draw(rng)
    # O(reserved) space, not O(pairs): 523776 pairs, a few hundred entries.
    assert len(store._perm) <= 200 and len(store._where) <= 200


def test_pool_draw_is_uniform_over_the_free_values() -> None:
    # Deterministic (seeded): after taking the even values, the first draw of each round
    # lands on every odd value, each about equally often.
    counts = dict.fromkeys(range(1, 20, 2), 0)
    rng = random.Random(11)
    pool = SparsePool(MemoryPoolStore(20), 20)
    for v in range(0, 20, 2):
        pool.take(v)
    for _ in range(5000):
        got = pool.draw(rng)
        assert got in counts
        counts[got] += 1
        pool.put(got)
    assert min(counts.values()) > 400 and max(counts.values()) < 600


# --- the ledger -------------------------------------------------------------------------


def test_allocations_are_ordered_distinct_pairs_in_range(tmp_path: Path) -> None:
    led = ledger(tmp_path, cat_min=3, cat_max=12)
    seen = set()
    for i in range(pair_count(10)):
        level = led.allocate(f"vm{i}")
        assert level.startswith("s0:c")
        a, b = cats(level)
        assert 3 <= a < b <= 12
        assert level == f"s0:c{a},c{b}"  # always a comma pair, even when adjacent
        seen.add(level)
    assert len(seen) == pair_count(10)


def test_exhaustion_is_a_clear_error_and_release_frees(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    levels = {led.allocate(f"vm{i}"): f"vm{i}" for i in range(28)}
    with pytest.raises(SecurityError, match=r"no free MCS category pair in c0\.c7: all 28 pairs"):
        led.allocate("late")
    victim = sorted(levels)[5]
    assert led.release(levels[victim]) == [victim]
    assert led.allocate("late") == victim
    assert led.owner(victim) == "late"


def sqlite_steps(led: McsLedger, domain: str) -> int:
    """SQLite virtual-machine steps one allocation takes (a count, not a time)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    led.conn.set_progress_handler(count, 1)
    try:
        led.allocate(domain)
    finally:
        led.conn.set_progress_handler(None, 1)
    return steps


def test_allocation_work_does_not_grow_with_occupancy(tmp_path: Path) -> None:
    led = ledger(tmp_path, cat_max=127)  # 8128 pairs
    led.reserve("static-vm", "s0:c200,c201", static=True)  # statics are read every time
    low = max(sqlite_steps(led, f"low{i}") for i in range(5))
    with write_transaction(led.conn):
        for i in range(int(pair_count(128) * 0.95)):
            led.allocate(f"fill{i}")
    high = max(sqlite_steps(led, f"high{i}") for i in range(5))
    # O(1): a scan of the reservations would make this grow ~20-fold.
    assert high < 2 * low, (low, high)


def test_too_small_range_is_libvirts_error(tmp_path: Path) -> None:
    with pytest.raises(SecurityError) as info:
        McsLedger(connect(tmp_path), 0, 0, 6)
    assert str(info.value) == "internal error: Category range c0-c6 too small"


def test_reservations_survive_a_restart(tmp_path: Path) -> None:
    first = ledger(tmp_path, seed=5)
    mine = {first.allocate(f"vm{i}") for i in range(20)}
    first.conn.close()
    again = ledger(tmp_path, seed=5)  # the same seed would redraw the same pairs
    rest = {again.allocate(f"new{i}") for i in range(8)}
    assert not mine & rest
    assert len(mine | rest) == 28
    assert {r.level for r in again.reservations()} == mine | rest


def test_two_connections_share_one_ledger(tmp_path: Path) -> None:
    a, b = ledger(tmp_path, seed=9), ledger(tmp_path, seed=9)
    got = [a.allocate("a0"), b.allocate("b0"), a.allocate("a1"), b.allocate("b1")]
    assert len(set(got)) == 4
    assert b.owner(got[0]) == "a0"
    a.release("a0")
    assert b.owner(got[0]) is None


def test_concurrent_processes_never_share_a_pair(tmp_path: Path) -> None:
    """Two real svirt processes allocating at once from one state directory."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from svirt.security.mcs import McsLedger
        from svirt.state.db import connect, write_transaction
        led = McsLedger(connect(Path({str(tmp_path)!r})), 0, 0, 15)
        for i in range(50):
            print(led.allocate(sys.argv[1] + str(i)))
        """
    )
    ledger(tmp_path, cat_max=15)  # create the pool once, before the race
    procs = [
        subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True)
        for name in ("p", "q")
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    together = outs[0] + outs[1]
    assert len(together) == 100 and len(set(together)) == 100
    conn = sqlite3.connect(tmp_path / "svirt.db")
    assert conn.execute("SELECT COUNT(*) FROM mcs_reservations").fetchone()[0] == 100
    assert int(conn.execute("SELECT value FROM mcs_meta WHERE key='free'").fetchone()[0]) == 20


def test_static_pair_is_never_allocated(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("static-vm", "s0:c1,c2", static=True)
    got = {led.allocate(f"vm{i}") for i in range(27)}
    assert "s0:c1,c2" not in got
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        led.allocate("one-too-many")


def test_pairs_a_static_label_dominates_are_blocked_until_it_goes(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("wide", "s0:c0.c3", static=True)  # could read any pair within c0..c3
    got = [led.allocate(f"vm{i}") for i in range(28 - 6)]
    for level in got:
        assert cats(level)[1] > 3, f"{level} is readable by the static label s0:c0.c3"
    with pytest.raises(SecurityError, match="dominated by static labels"):
        led.allocate("none-left")
    blocked = [r for r in led.reservations() if r.kind == "blocked"]
    assert len(blocked) == 6 and {r.domain for r in blocked} == {"wide"}
    assert led.owner("s0:c0,c1") is None  # blocked is not "in use"
    assert sorted(led.release("wide"))[0] == "s0:c0,c1"
    freed = {led.allocate(f"after{i}") for i in range(6)}
    assert all(cats(level)[1] <= 3 for level in freed)


def test_exhaustion_by_blocked_pairs_is_paid_once(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("wide", "s0:c0.c3", static=True)
    # Running domains (found on reconnect) hold every pair the static label does not
    # dominate; the six it dominates are still in the pool, never drawn.
    for b in range(8):
        for a in range(b):
            if b > 3:
                led.reserve(f"vm{a}-{b}", f"s0:c{a},c{b}")
    assert led.pool.free == 6
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        led.allocate("late")
    # What the failed draw set aside stays set aside: the next attempt starts empty.
    assert led.pool.free == 0
    assert sum(r.kind == "blocked" for r in led.reservations()) == 6


def test_static_label_over_the_whole_range_is_allowed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Blocking every pair would stop all dynamic domains (libvirt allows them): the
    allocation goes on, nothing is set aside, and the weakness is said out loud."""
    led = ledger(tmp_path, cat_max=255)  # 32640 pairs
    led.reserve("admin-vm", "s0-s0:c0.c1023", static=True)
    level = led.allocate("vm")
    assert cats(level)[1] <= 255
    assert "static label of domain admin-vm dominates every category pair" in caplog.text
    assert not any(r.kind == "blocked" for r in led.reservations())
    assert led.pool.free == pair_count(256) - 1


def test_static_label_equal_to_a_dynamic_level_is_refused(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    live = led.allocate("dyn")
    label = f"system_u:system_r:svirt_t:{live}"
    with pytest.raises(SecurityError) as info:
        led.reserve("static-vm", live, static=True, label=label)
    assert str(info.value) == (
        f"internal error: static label {label} has the MCS level {live} that running domain "
        "dyn holds as its own dynamic level; refusing: sharing it would open that domain's "
        "files to this one (only domains that all set the same static label share a level)"
    )
    assert led.sharers(live) == ["dyn"]


# --- shared static labels (issue 14) ------------------------------------------------------


def test_equal_static_labels_share_one_level(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("a", "s0:c1,c2", static=True)
    led.reserve("b", "s0:c2,c1-s0:c1,c2", static=True)  # the same level, spelled otherwise
    led.reserve("b", "s0:c1,c2", static=True)  # idempotent
    assert led.sharers("s0:c1,c2") == ["a", "b"] and led.levels_of("b") == ["s0:c1,c2"]
    assert led.pool.free == 28 - 1  # one pair out of the pool, whoever holds it
    # A dynamic draw never takes it, and a reconnecting dynamic domain cannot claim it.
    assert "s0:c1,c2" not in {led.allocate(f"x{i}") for i in range(27)}
    with pytest.raises(SecurityError, match=r"already reserved \(by domain a, b\)"):
        led.reserve("dyn", "s0:c1,c2")


def test_the_pair_stays_out_until_the_last_sharer_goes(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("a", "s0:c1,c2", static=True)
    led.reserve("b", "s0:c1,c2", static=True)
    assert led.release("a") == ["s0:c1,c2"]
    assert led.sharers("s0:c1,c2") == ["b"]
    assert "s0:c1,c2" not in {led.allocate(f"x{i}") for i in range(27)}
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        led.allocate("none-left")
    for i in range(27):
        led.release(f"x{i}")
    led.release("b")
    assert len({led.allocate(f"y{i}") for i in range(28)}) == 28


def test_blocked_pairs_pass_to_the_remaining_sharer(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("wide1", "s0:c0.c3", static=True)
    led.reserve("wide2", "s0:c0.c3", static=True)
    got = [led.allocate(f"vm{i}") for i in range(28 - 6)]
    assert all(cats(level)[1] > 3 for level in got)
    led.release("wide1")
    assert {r.domain for r in led.reservations() if r.kind == "blocked"} == {"wide2"}
    for i in range(22):
        led.release(f"vm{i}")
    again = {led.allocate(f"again{i}") for i in range(22)}
    assert all(cats(level)[1] > 3 for level in again)
    led.release("wide2")
    assert {led.allocate(f"z{i}") for i in range(6)} == {
        f"s0:c{a},c{b}" for b in range(4) for a in range(b)
    }


def test_a_database_keyed_by_level_is_rekeyed(tmp_path: Path) -> None:
    """A state database of an earlier svirt (level the only key) opens, keeps its rows,
    and takes a second holder of a static label."""
    db = tmp_path / "svirt.db"
    old = sqlite3.connect(db)
    old.executescript(
        "CREATE TABLE mcs_reservations (level TEXT PRIMARY KEY, domain TEXT NOT NULL, "
        "kind TEXT NOT NULL CHECK (kind IN ('dynamic', 'static', 'blocked')), pair INTEGER, "
        "created REAL NOT NULL);"
        "CREATE INDEX mcs_reservations_domain ON mcs_reservations(domain);"
        "INSERT INTO mcs_reservations VALUES ('s0:c1,c2', 'a', 'static', NULL, 1.0);"
    )
    old.close()
    led = ledger(tmp_path)
    led.reserve("b", "s0:c1,c2", static=True)
    assert led.sharers("s0:c1,c2") == ["a", "b"]
    keys = [r[1] for r in led.conn.execute("PRAGMA table_info(mcs_reservations)") if r[5]]
    assert keys == ["level", "domain"]


def test_reserve_is_idempotent_for_the_same_domain(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("vm", "s0:c3,c4")
    led.reserve("vm", "s0:c3,c4")
    assert led.levels_of("vm") == ["s0:c3,c4"]
    assert "s0:c3,c4" not in {led.allocate(f"x{i}") for i in range(27)}


def test_reserve_on_reconnect_refuses_a_level_held_by_another(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("vm1", "s0:c3,c4")
    with pytest.raises(SecurityError, match="MCS level for existing domain label s0:c3,c4"):
        led.reserve("vm2", "s0:c3,c4")


def test_reserve_canonicalises_levels(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("vm", "s0:c4,c3-s0:c3,c4")
    assert led.owner("s0:c3,c4") == "vm"
    assert led.levels_of("vm") == ["s0:c3,c4"]
    with pytest.raises(SecurityError, match="already reserved"):
        led.reserve("other", "s0:c3,c4")


def test_reserving_a_blocked_pair_unblocks_it(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("wide", "s0:c0.c3", static=True)
    for i in range(22):
        led.allocate(f"vm{i}")
    assert any(r.level == "s0:c1,c2" and r.kind == "blocked" for r in led.reservations())
    led.reserve("running", "s0:c1,c2")  # a running domain found on reconnect
    assert led.owner("s0:c1,c2") == "running"
    led.release("wide")
    led.release("running")
    assert {led.allocate(f"z{i}") for i in range(6)} == {
        f"s0:c{a},c{b}" for b in range(4) for a in range(b)
    }


def test_levels_outside_the_pool_are_recorded_too(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.reserve("vm", "s0:c100,c200", static=True)  # outside c0.c7: no pool entry
    led.reserve("vm2", "s0", static=True)
    assert led.owner("s0:c100,c200") == "vm"
    assert led.owner("s0") == "vm2"
    assert len({led.allocate(f"x{i}") for i in range(28)}) == 28


def test_a_new_range_rebuilds_the_pool_keeping_reservations(tmp_path: Path) -> None:
    small = ledger(tmp_path)
    kept = small.allocate("vm")
    small.conn.close()
    wide = ledger(tmp_path, cat_max=9)
    got = {wide.allocate(f"x{i}") for i in range(pair_count(10) - 1)}
    assert kept not in got
    assert wide.owner(kept) == "vm"


class LedgerMachine(RuleBasedStateMachine):
    """McsLedger against a model: live levels, statics, and what may still be drawn."""

    domains = Bundle("domains")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="svirt-ledger-"))
        self.led = ledger(self.dir, seed=0)
        self.dynamic: dict[str, str] = {}
        self.static: dict[str, frozenset[int]] = {}
        self.n = 0

    def teardown(self) -> None:
        self.led.conn.close()
        subprocess.run(["rm", "-rf", str(self.dir)], check=True)

    def _name(self) -> str:
        self.n += 1
        return f"d{self.n}"

    def _drawable(self) -> set[str]:
        taken = set(self.dynamic.values())
        return {
            f"s0:c{a},c{b}"
            for b in range(8)
            for a in range(b)
            if f"s0:c{a},c{b}" not in taken and not any({a, b} <= s for s in self.static.values())
        }

    @rule(target=domains)
    def allocate(self) -> str:
        name = self._name()
        drawable = self._drawable()
        if not drawable:
            with pytest.raises(SecurityError):
                self.led.allocate(name)
            return name
        level = self.led.allocate(name)
        assert level in drawable
        self.dynamic[name] = level
        return name

    @rule(target=domains, lo=st.integers(0, 6), width=st.integers(1, 4))
    def add_static(self, lo: int, width: int) -> str:
        name = self._name()
        hi = min(7, lo + width)
        cats_ = frozenset(range(lo, hi + 1))
        level = f"s0:c{lo},c{hi}" if hi == lo + 1 else f"s0:c{lo}.c{hi}"
        if level in self.dynamic.values():
            with pytest.raises(SecurityError, match="holds as its own dynamic level"):
                self.led.reserve(name, level, static=True)
            return name
        self.led.reserve(name, level, static=True)
        self.static[name] = cats_
        return name

    @rule(name=consumes(domains))
    def release(self, name: str) -> None:
        self.led.release(name)
        self.dynamic.pop(name, None)
        self.static.pop(name, None)

    @invariant()
    def live_levels_are_unique_and_owned(self) -> None:
        for name, level in self.dynamic.items():
            assert self.led.owner(level) == name
        live = [r.level for r in self.led.reservations() if r.kind == "dynamic"]
        statics = {r.level for r in self.led.reservations() if r.kind == "static"}
        assert len(live) == len(set(live)) and not statics & set(live)

    @invariant()
    def static_pairs_stay_out_of_the_pool_while_any_holder_lives(self) -> None:
        for r in self.led.reservations():
            idx = self.led.space.index_of(r.level)
            if r.kind == "static" and idx is not None:
                assert self.led.pool.store.where_get(idx) >= self.led.pool.free, r

    @invariant()
    def pool_matches_reservations(self) -> None:
        pool_taken = self.led.size - self.led.pool.free
        rows = self.led.conn.execute(
            "SELECT COUNT(*) FROM mcs_reservations WHERE pair IS NOT NULL"
        ).fetchone()[0]
        assert pool_taken == rows


TestLedger = LedgerMachine.TestCase
TestLedger.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
