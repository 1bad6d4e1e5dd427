"""The fleet ledger on a real 3-member etcd cluster (issue 15).

Each simulated host is a state directory with its own host id; its svirt processes are
real processes (tests/fleet_worker.py, or the svirt CLI) and its keeper is the real
keeper process. The cluster's members are real etcd processes on loopback ports picked
at start, killed and restarted by pid.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etcd_cluster import EtcdCluster, make_certs
from svirt.cli.main import main
from svirt.errors import SecurityError
from svirt.security.fleet import (
    EtcdLedger,
    FleetClient,
    FleetSettings,
    FleetUnavailable,
    keeper_pid,
)
from svirt.state.db import connect

pytestmark = pytest.mark.slow
WORKER = Path(__file__).parent / "fleet_worker.py"
# Long enough that a keeper starved by a loaded 2-core machine never lets a lease lapse
# by accident; the test of lapsing uses SHORT_TTL.
TTL = 15
SHORT_TTL = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A cluster of the test's own, for tests that kill members."""
    c = EtcdCluster(tmp_path / "etcd").start()
    try:
        yield c
    finally:
        c.stop()


class Fleet:
    """Simulated hosts sharing one cluster under a prefix of the test's own."""

    def __init__(self, cluster: EtcdCluster, root: Path, prefix: str) -> None:
        self.cluster = cluster
        self.root = root
        self.prefix = prefix
        self.conns: list[sqlite3.Connection] = []

    def settings(self, host: str, **kw: object) -> FleetSettings:
        base = {
            "endpoints": tuple(self.cluster.endpoints),
            "prefix": self.prefix,
            "host_id": host,
            "ttl": TTL,
            "timeout": 1.0,
            "state_dir": str(self.root / host),
        }
        base.update(kw)
        return FleetSettings(**base)  # type: ignore[arg-type]

    def ledger(self, host: str, cat_max: int = 1023, **kw: object) -> EtcdLedger:
        conn = connect(self.root / host)
        self.conns.append(conn)
        return EtcdLedger(conn, 0, 0, cat_max, self.settings(host, **kw))

    def workers(
        self, host: str, cat_max: int, n: int, prefix: str, ttl: int = TTL
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                self.settings(host, ttl=ttl).to_json(),
                str(cat_max),
                str(n),
                prefix,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def pairs(self) -> dict[str, dict[str, object]]:
        """Every reserved pair key in the cluster → its value."""
        client = FleetClient(self.settings("probe"))
        return {k.decode(): json.loads(v) for k, v, _m in client.prefix(f"{self.prefix}pair/")}

    def statics(self) -> set[tuple[str, str, str]]:
        """(level, host, domain) of every static label's holder key in the cluster."""
        client = FleetClient(self.settings("probe"))
        return {
            (str(v["level"]), str(v["host"]), str(v["domain"]))
            for _k, raw, _m in client.prefix(f"{self.prefix}level/")
            if (v := json.loads(raw)).get("kind") == "static"
        }

    def stop_keepers(self) -> None:
        for d in self.root.iterdir():
            pid = keeper_pid(d) if d.is_dir() else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda p=pid: not _alive(p), 5)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def fleet(cluster: EtcdCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    f = Fleet(cluster, tmp_path, f"/t-{request.node.name}/")
    try:
        yield f
    finally:
        f.stop_keepers()
        for c in f.conns:
            c.close()


def collect(procs: list[subprocess.Popen[str]]) -> list[str]:
    levels = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        levels += out.split()
    return levels


# --- allocation -------------------------------------------------------------------------


def test_concurrent_allocation_from_4_hosts_x_8_processes_never_duplicates(fleet: Fleet) -> None:
    # 40 categories: 780 pairs; 32 processes take 640 of them (82 %), so the processes
    # keep landing on the same blocks and racing for the same free pairs.
    hosts = ["ha", "hb", "hc", "hd"]
    procs = [fleet.workers(h, 39, 20, f"{h}-{i}-") for h in hosts for i in range(8)]
    levels = collect(procs)
    assert len(levels) == 640
    assert len(set(levels)) == 640, "a pair was handed out twice"
    pairs = fleet.pairs()
    assert len(pairs) == 640
    for h in hosts:
        conn = sqlite3.connect(fleet.root / h / "svirt.db")
        mine = {r[0] for r in conn.execute("SELECT level FROM fleet_reservations")}
        conn.close()
        assert len(mine) == 160
        assert sum(1 for v in pairs.values() if v["host"] == h) == 160


def test_full_range_is_refused_and_release_gives_back(fleet: Fleet) -> None:
    a, b = fleet.ledger("ha", cat_max=7), fleet.ledger("hb", cat_max=7)  # 28 pairs
    got = [a.allocate(f"a{i}") for i in range(14)] + [b.allocate(f"b{i}") for i in range(14)]
    assert len(set(got)) == 28
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        b.allocate("more")
    freed = a.release("a3")
    assert wait_until(lambda: len(fleet.pairs()) == 27, 5)
    assert b.allocate("more") == freed[0]


def test_reserve_static_and_reconnect_across_hosts(fleet: Fleet) -> None:
    a, b = fleet.ledger("ha", cat_max=7), fleet.ledger("hb", cat_max=7)
    a.reserve("web", "s0:c1,c2", static=True)
    a.reserve("web", "s0:c1,c2", static=True)  # idempotent for the same domain
    # A dynamic domain found again on reconnect cannot hold a static label's level.
    with pytest.raises(SecurityError, match=r"already reserved \(by domain web on host ha\)"):
        b.reserve("db", "s0:c1,c2")
    assert b.held_elsewhere("s0:c1,c2") == "domain web on host ha"
    # A static range on one host keeps every host's dynamic draws out of its categories.
    b.reserve("wide", "s0:c0.c5", static=True)
    drawn = {a.allocate(f"d{i}") for i in range(12)}
    for level in drawn:
        cats = {int(c[1:]) for c in level.split(":")[1].split(",")}
        assert not cats <= set(range(6)), level


def test_one_static_label_shared_across_hosts(fleet: Fleet) -> None:
    """Issue 14: domains on two hosts with one static label both hold it; dynamic draws
    on every host stay out of it until the last holder goes; a static label equal to a
    dynamic domain's level is refused, naming it."""
    a, b = fleet.ledger("ha", cat_max=7), fleet.ledger("hb", cat_max=7)  # 28 pairs
    a.reserve("web1", "s0:c1,c2", static=True)
    b.reserve("web2", "s0:c1,c2", static=True)
    b.reserve("web3", "s0:c2,c1-s0:c1,c2", static=True)  # two on one host too
    assert fleet.statics() == {
        ("s0:c1,c2", "ha", "web1"),
        ("s0:c1,c2", "hb", "web2"),
        ("s0:c1,c2", "hb", "web3"),
    }
    assert a.held_elsewhere("s0:c1,c2") == "domain web2 on host hb"
    got = [a.allocate(f"a{i}") for i in range(14)] + [b.allocate(f"b{i}") for i in range(13)]
    assert len(set(got)) == 27 and "s0:c1,c2" not in got
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        a.allocate("more")
    # The first holder goes: the others still keep the level out of every draw.
    assert a.release("web1") == ["s0:c1,c2"]
    assert wait_until(lambda: len(fleet.statics()) == 2, 5)
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        a.allocate("more")
    b.release("web2")
    assert fleet.statics() == {("s0:c1,c2", "hb", "web3")}
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        b.allocate("more")
    b.release("web3")
    assert wait_until(lambda: not fleet.statics(), 5)
    assert a.allocate("more") == "s0:c1,c2"
    # A static label equal to that dynamic level (held on host ha) is refused on hb.
    with pytest.raises(SecurityError) as info:
        b.reserve("st", "s0:c1,c2", static=True, label="system_u:system_r:svirt_t:s0:c1,c2")
    assert str(info.value) == (
        "internal error: static label system_u:system_r:svirt_t:s0:c1,c2 has the MCS level "
        "s0:c1,c2 that running domain more on host ha holds as its own dynamic level; "
        "refusing: sharing it would open that domain's files to this one (only domains that "
        "all set the same static label share a level)"
    )
    assert fleet.statics() == set() and b.levels_of("st") == []
    # The race: a draw that read the static labels before one was created creates its
    # pair, reads them again in the same transaction, and gives the pair back.
    (free,) = a.release("a0")
    assert wait_until(lambda: len(fleet.pairs()) == 27, 5)
    b.reserve("late", free, static=True)
    assert a._create("racer", free, "dynamic", drawn=True) is False
    assert all(v["domain"] != "racer" for v in fleet.pairs().values())
    assert a.levels_of("racer") == []


def test_a_mirror_keyed_by_level_is_rekeyed(tmp_path: Path) -> None:
    """A host's fleet mirror made before issue 14 (level its only key) keeps its rows and
    takes a second holder of one static label."""
    from svirt.security.fleet import _ensure_schema

    conn = connect(tmp_path / "h")
    conn.executescript(
        "CREATE TABLE fleet_reservations (level TEXT PRIMARY KEY, domain TEXT NOT NULL, "
        "kind TEXT NOT NULL, key TEXT NOT NULL, mod INTEGER NOT NULL, sticky INTEGER NOT NULL "
        "DEFAULT 0, created REAL NOT NULL, pid INTEGER NOT NULL);"
        "CREATE INDEX fleet_reservations_domain ON fleet_reservations(domain);"
        "INSERT INTO fleet_reservations VALUES ('s0:c1,c2', 'a', 'static', 'k', 5, 0, 1.0, 1);"
    )
    _ensure_schema(conn)
    _ensure_schema(conn)  # idempotent
    conn.execute(
        "INSERT INTO fleet_reservations VALUES ('s0:c1,c2', 'b', 'static', 'k2', 6, 0, 2.0, 1)"
    )
    rows = conn.execute("SELECT level, domain, mod FROM fleet_reservations ORDER BY domain")
    assert rows.fetchall() == [("s0:c1,c2", "a", 5), ("s0:c1,c2", "b", 6)]
    keys = [r[1] for r in conn.execute("PRAGMA table_info(fleet_reservations)") if r[5]]
    assert keys == ["level", "domain"]
    conn.close()


def test_dry_run_reserves_nothing(fleet: Fleet) -> None:
    a = fleet.ledger("ha")
    with a.preview():
        a.allocate("x")
    assert fleet.pairs() == {}
    assert list(a.reservations()) == []


# --- faults -----------------------------------------------------------------------------


def test_one_member_killed_allocation_goes_on_two_killed_refused(
    own_cluster: EtcdCluster, tmp_path: Path
) -> None:
    fleet = Fleet(own_cluster, tmp_path, "/t/")
    try:
        a = fleet.ledger("ha")
        first = a.allocate("before")
        # The leader, the member whose loss matters most: an election follows.
        down = own_cluster.leader()
        own_cluster.kill(down)
        after = [a.allocate(f"one-down-{i}") for i in range(5)]
        assert len({first, *after}) == 6
        own_cluster.kill(next(m for m in own_cluster.members if m.proc is not None))
        time.sleep(1.0)  # the survivor notices it lost the leader
        before = sorted(a.levels_of(d)[0] for d in ("before", *(f"one-down-{i}" for i in range(5))))
        with pytest.raises(FleetUnavailable) as exc:
            a.allocate("refused")
        msg = str(exc.value)
        assert "\n" not in msg
        for ep in own_cluster.endpoints:
            assert ep in msg
        assert a.levels_of("refused") == []
        assert sorted(r.level for r in a.reservations()) == before
        # stop still works: the release is queued, then done once etcd answers.
        released = a.release("before")
        assert released == [first]
        assert a.levels_of("before") == []
        pending = a.conn.execute("SELECT level FROM fleet_pending").fetchall()
        assert pending == [(first,)]
        for m in own_cluster.members:
            if m.proc is None:
                own_cluster.restart(m)
        own_cluster.wait_leader()
        # The refused allocation may have been taken by a member that still led and be
        # committed now that the quorum is back: its undo is queued with the releases.
        assert wait_until(lambda: not a.conn.execute(_QUEUED).fetchone(), 15)
        held = {v["domain"] for v in fleet.pairs().values()}
        assert "before" not in held and "refused" not in held  # nothing reserved either
        assert held == {f"one-down-{i}" for i in range(5)}
    finally:
        fleet.stop_keepers()


_QUEUED = "SELECT 1 FROM fleet_pending UNION ALL SELECT 1 FROM fleet_undo"


def _taken_but_not_committed(
    cluster: EtcdCluster, fleet: Fleet, write: Callable[[EtcdLedger], object]
) -> tuple[EtcdLedger, list[tuple[object, ...]]]:
    """Provoke a write whose outcome is unknown and that commits later: a ledger that
    talks to the leader only runs ``write`` just after the leader's followers died, so
    the leader appends the proposal but cannot commit it; the client times out. Then one
    follower comes back first: the old leader's log is the longer one, so it wins the
    election and commits what it took. Tried again (at most 3 times) when the leader had
    already stepped down before the write reached it. Returns the ledger (host ha, domain
    ``warm`` allocated, no keeper: the test flushes) and its queued undo rows."""
    conn = connect(fleet.root / "ha")
    fleet.conns.append(conn)
    probe = FleetClient(fleet.settings("probe"))
    for _attempt in range(3):
        leader = cluster.leader()
        followers = [m for m in cluster.members if m is not leader]
        settings = fleet.settings("ha", endpoints=(leader.endpoint,))
        a = EtcdLedger(conn, 0, 0, 1023, settings, keeper=False)
        if not a.levels_of("warm"):
            a.allocate("warm")  # the lease exists and the leader was just checked
        for m in followers:
            cluster.kill(m)
        with pytest.raises(FleetUnavailable):
            write(a)
        undo = conn.execute("SELECT key, value, ops, level, domain, kind, queued FROM fleet_undo")
        rows = undo.fetchall()
        cluster.restart(followers[0])
        cluster.wait_leader()
        cluster.restart(followers[1])
        cluster.wait_leader()
        for row in rows:
            got = probe.get(str(row[0]))
            if got is not None and got[0] == json.loads(str(row[1])):
                return a, rows
        a.flush()  # it never committed: the undo finds nothing to do
        assert conn.execute(_QUEUED).fetchall() == []
    raise AssertionError("the leader never took the write before stepping down (3 tries)")


def test_unanswered_allocation_that_commits_later_is_undone(
    own_cluster: EtcdCluster, tmp_path: Path
) -> None:
    """An allocation reported failed whose proposal commits later is taken back by the
    host's pending queue, and that undo never deletes a later reservation of the pair."""
    fleet = Fleet(own_cluster, tmp_path, "/t/")
    probe = FleetClient(fleet.settings("probe"))
    try:
        a, rows = _taken_but_not_committed(own_cluster, fleet, lambda a: a.allocate("refused"))
        assert a.levels_of("refused") == [] and len(rows) == 1
        key, _value, _ops, level, domain, _kind, _queued = rows[0]
        assert domain == "refused"
        got = probe.get(str(key))  # committed after the client was told it failed
        assert got is not None and (got[0]["domain"], got[0]["host"]) == ("refused", "ha")
        assert probe.get(f"/t/held/ha/{level}") is not None  # bound to the host's lease
        a.flush()  # what the keeper does once etcd answers
        assert probe.get(str(key)) is None and probe.get(f"/t/held/ha/{level}") is None
        assert a.conn.execute(_QUEUED).fetchall() == []
        assert {v["domain"] for v in fleet.pairs().values()} == {"warm"}
        # Another domain reserves the pair legitimately; the same undo sent again (as
        # after an undo whose own answer was lost) finds another value and deletes nothing.
        b = fleet.ledger("hb")
        b.reserve("later", str(level))
        with a.conn:
            a.conn.execute("INSERT INTO fleet_undo VALUES (?, ?, ?, ?, ?, ?, ?)", rows[0])
        a.flush()
        assert a.conn.execute(_QUEUED).fetchall() == []
        got = probe.get(str(key))
        assert got is not None and (got[0]["domain"], got[0]["host"]) == ("later", "hb")
        assert b.levels_of("later") == [level]
    finally:
        fleet.stop_keepers()


def test_unanswered_static_holder_key_that_commits_later_is_undone(
    own_cluster: EtcdCluster, tmp_path: Path
) -> None:
    fleet = Fleet(own_cluster, tmp_path, "/t/")
    try:
        a, rows = _taken_but_not_committed(
            own_cluster, fleet, lambda a: a.reserve("st", "s0:c1,c2", static=True)
        )
        assert a.levels_of("st") == [] and len(rows) == 1
        assert fleet.statics() == {("s0:c1,c2", "ha", "st")}  # committed after all
        a.flush()
        assert fleet.statics() == set() and a.conn.execute(_QUEUED).fetchall() == []
        assert {v["domain"] for v in fleet.pairs().values()} == {"warm"}
    finally:
        fleet.stop_keepers()


def test_unanswered_handover_that_commits_later_is_taken_back(
    own_cluster: EtcdCluster, tmp_path: Path
) -> None:
    """``migrate-label`` reported failed: the pair stays the source's, which still runs
    the domain, and its stop frees it (not left handed to a host that never starts it)."""
    fleet = Fleet(own_cluster, tmp_path, "/t/")
    probe = FleetClient(fleet.settings("probe"))
    try:
        a, rows = _taken_but_not_committed(own_cluster, fleet, lambda a: a.migrate("warm", "hb"))
        assert len(rows) == 1 and rows[0][5] == "handover"
        (level,) = a.levels_of("warm")
        assert [(v["domain"], v["host"]) for v in fleet.pairs().values()] == [("warm", "hb")]
        assert probe.get("/t/handover/hb/warm") is not None  # committed after all
        a.flush()
        assert [(v["domain"], v["host"]) for v in fleet.pairs().values()] == [("warm", "ha")]
        assert probe.get("/t/handover/hb/warm") is None
        assert probe.get(f"/t/held/ha/{level}") is not None
        assert a.conn.execute(_QUEUED).fetchall() == []
        a.release("warm")
        assert fleet.pairs() == {} and probe.get(f"/t/held/ha/{level}") is None
    finally:
        fleet.stop_keepers()


def test_cli_label_refused_without_quorum_allocates_nothing(
    own_cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "a.img"
    img.write_bytes(b"x")
    os.setxattr(img, "security.selinux", b"system_u:object_r:user_tmp_t:s0\0")
    before = os.getxattr(img, "security.selinux")
    xml = tmp_path / "vm.xml"
    xml.write_text(
        "<domain type='kvm'><name>vm</name><os><type>hvm</type></os>"
        f"<devices><disk type='file' device='disk'><source file='{img}'/>"
        "<target dev='vda'/></disk></devices></domain>"
    )
    conf = tmp_path / "svirt.conf"
    eps = ", ".join(f'"{e}"' for e in own_cluster.endpoints)
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{tmp_path / "state"}"\n'
        f'ledger = "etcd"\netcd_endpoints = [{eps}]\nhost_id = "ha"\netcd_lease_ttl = {TTL}\n'
        "etcd_timeout = 1.0\n"
    )
    own_cluster.kill(own_cluster.members[0])
    own_cluster.kill(own_cluster.members[2])
    time.sleep(1.0)
    rc = main(["label", "--config", str(conf), str(xml)])
    err = capsys.readouterr().err
    assert rc == 1
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1 and "Traceback" not in err
    assert (
        "etcd cluster unreachable or without quorum at " + ", ".join(own_cluster.endpoints)
        in line[0]
    )
    assert os.getxattr(img, "security.selinux") == before
    # `svirt start` is refused the same way, by its monitor, before QEMU or any label.
    rc = main(["start", "--config", str(conf), str(xml)])
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 1 and len(line) == 1 and "Traceback" not in err
    assert "etcd cluster unreachable or without quorum at " in line[0]
    assert all(ep in line[0] for ep in own_cluster.endpoints)
    assert os.getxattr(img, "security.selinux") == before
    conn = sqlite3.connect(tmp_path / "state" / "svirt.db")
    assert conn.execute("SELECT count(*) FROM fleet_reservations").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM domains").fetchone() == (0,)
    conn.close()
    # With the quorum back, the same command labels and reserves cluster-wide.
    own_cluster.restart(own_cluster.members[0])
    own_cluster.wait_leader()
    assert main(["label", "--config", str(conf), str(xml)]) == 0
    fleet = Fleet(own_cluster, tmp_path, "/svirt/")
    assert [v["domain"] for v in fleet.pairs().values()] == ["vm"]
    assert main(["restore", "--config", str(conf), str(xml)]) == 0
    assert wait_until(lambda: fleet.pairs() == {}, 10)
    fleet.stop_keepers()


def test_dead_hosts_pairs_return_after_its_lease(fleet: Fleet) -> None:
    procs = [fleet.workers("ha", 1023, 5, f"w{i}-", ttl=SHORT_TTL) for i in range(2)]
    levels = collect(procs)
    assert len(fleet.pairs()) == 10
    pid = keeper_pid(fleet.root / "ha")
    assert pid is not None
    # Alive, the keeper keeps the lease past its TTL.
    time.sleep(SHORT_TTL + 1)
    assert len(fleet.pairs()) == 10
    os.kill(pid, signal.SIGKILL)  # the host's last svirt process dies with it
    assert wait_until(lambda: fleet.pairs() == {}, SHORT_TTL * 4)
    b = fleet.ledger("hb")
    b.reserve("taker", levels[0])  # free again: another host may take it
    assert b.levels_of("taker") == [levels[0]]


def test_partitioned_host_says_its_reservations_may_lapse(
    own_cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "svirt.conf"
    eps = ", ".join(f'"{e}"' for e in own_cluster.endpoints)
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{tmp_path / "ha"}"\n'
        f'ledger = "etcd"\netcd_endpoints = [{eps}]\nhost_id = "ha"\n'
        f"etcd_lease_ttl = {SHORT_TTL}\netcd_timeout = 0.5\n"
    )
    fleet = Fleet(own_cluster, tmp_path, "/svirt/")
    try:
        a = fleet.ledger("ha", ttl=SHORT_TTL, timeout=0.5)
        a.allocate("vm")
        for m in own_cluster.members:
            own_cluster.kill(m)
        # The keeper notices at its next renewal, says so in its log, and goes on.
        log = tmp_path / "ha" / "fleet-keeper.log"
        assert wait_until(lambda: log.exists() and "lapse at" in log.read_text(), 15)
        pid = keeper_pid(tmp_path / "ha")
        assert pid is not None and _alive(pid)
        assert main(["fleet", "status", "--config", str(conf)]) == 0
        out = capsys.readouterr().out
        assert "vm" in out
        assert "keeper: partitioned" in out
        assert "its running VMs go on, but its reservations lapse" in out
        assert a.levels_of("vm") != []  # nothing was given up locally
    finally:
        fleet.stop_keepers()


# --- labels that follow a domain ----------------------------------------------------------


def test_migration_handover_under_concurrent_allocation(fleet: Fleet) -> None:
    a, b = fleet.ledger("ha", cat_max=39), fleet.ledger("hb", cat_max=39)
    level = a.allocate("mover")
    others = [fleet.workers(h, 39, 25, f"{h}-{i}-") for h in ("hc", "hd") for i in range(4)]
    assert a.migrate("mover", "hb") == level
    # The source still runs it: its stop must not free the pair it handed over.
    a.release("mover")
    assert b.allocate("mover") == level
    levels = collect(others)
    everyone = [*levels, level]
    assert len(set(everyone)) == len(everyone) == 201
    value = next(v for v in fleet.pairs().values() if v["domain"] == "mover")
    assert value["host"] == "hb"
    # A second handover from a host that no longer holds it is refused.
    with pytest.raises(SecurityError, match="holds no MCS level"):
        a.migrate("mover", "hc")


def test_cli_migrate_label_hands_the_pair_to_the_destination(
    cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xml = tmp_path / "vm.xml"
    xml.write_text("<domain type='kvm'><name>vm</name><os><type>hvm</type></os></domain>")
    conf_a, conf_b = _host_conf(tmp_path, cluster, "ha"), _host_conf(tmp_path, cluster, "hb")
    fleet = Fleet(cluster, tmp_path, _prefix(tmp_path))
    try:
        assert main(["label", "--json", "--config", str(conf_a), str(xml)]) == 0
        label = json.loads(capsys.readouterr().out)["label"]
        level = label.split(":", 3)[3]
        assert main(["migrate-label", "vm", "--to", "hb", "--config", str(conf_a)]) == 0
        out = capsys.readouterr().out
        assert out == (
            f"MCS level {level} of domain vm handed over to host hb; it starts there with "
            "this level\n"
        )
        assert main(["label", "--json", "--config", str(conf_b), str(xml)]) == 0
        assert json.loads(capsys.readouterr().out)["label"] == label
        # The source lets its copy go; the destination keeps the pair.
        assert main(["restore", "--config", str(conf_a), str(xml)]) == 0
        values = list(fleet.pairs().values())
        assert [(v["domain"], v["host"]) for v in values] == [("vm", "hb")]
        capsys.readouterr()
        assert main(["fleet", "status", "--json", "--config", str(conf_b)]) == 0
        st = json.loads(capsys.readouterr().out)
        assert st["reservations"] == [{"level": level, "domain": "vm", "sticky": False}]
        assert main(["restore", "--config", str(conf_b), str(xml)]) == 0
        assert wait_until(lambda: fleet.pairs() == {}, 10)
    finally:
        fleet.stop_keepers()


def test_sticky_label_follows_the_domain_across_restarts_and_hosts(fleet: Fleet) -> None:
    a = fleet.ledger("ha", keep_labels=("db",))
    b = fleet.ledger("hb", keep_labels=("db",))
    level = a.allocate("db")
    a.release("db")  # stopped: the pair stays the domain's
    assert any(v["domain"] == "db" for v in fleet.pairs().values())
    other = fleet.ledger("hc")
    drawn = {other.allocate(f"x{i}") for i in range(20)}
    assert level not in drawn
    assert a.allocate("db") == level  # restart on the same host
    a.release("db")
    with pytest.raises(
        SecurityError, match="held by host ha; run 'svirt migrate-label db --to hb'"
    ):
        b.allocate("db")
    assert a.migrate("db", "hb") == level
    assert b.allocate("db") == level


# --- shared files -------------------------------------------------------------------------


def _prefix(tmp_path: Path) -> str:
    """The etcd prefix of a test's own (tests share the module's cluster)."""
    return f"/t-{tmp_path.name}/"


def _host_conf(tmp_path: Path, cluster: EtcdCluster, host: str, ledger: str = "etcd") -> Path:
    conf = tmp_path / f"{host}-{ledger}.conf"
    eps = ", ".join(f'"{e}"' for e in cluster.endpoints)
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{tmp_path / host}"\n'
        f'ledger = "{ledger}"\netcd_endpoints = [{eps}]\nhost_id = "{host}"\n'
        f'etcd_lease_ttl = {TTL}\netcd_prefix = "{_prefix(tmp_path)}"\n'
    )
    return conf


def test_doctor_asks_the_cluster_before_calling_a_shared_file_stale(
    cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared"  # stands for storage both hosts mount at the same path
    shared.mkdir()
    img = shared / "disk.img"
    img.write_bytes(b"x")
    orig = b"system_u:object_r:user_tmp_t:s0\0"
    os.setxattr(img, "security.selinux", orig)
    xml = tmp_path / "vm.xml"
    xml.write_text(
        "<domain type='kvm'><name>vm</name><os><type>hvm</type></os>"
        f"<devices><disk type='file' device='disk'><source file='{img}'/>"
        "<target dev='vda'/></disk></devices></domain>"
    )
    conf_a, conf_b = _host_conf(tmp_path, cluster, "ha"), _host_conf(tmp_path, cluster, "hb")
    fleet = Fleet(cluster, tmp_path, _prefix(tmp_path))
    try:
        assert main(["label", "--config", str(conf_a), str(xml)]) == 0
        labelled = os.getxattr(img, "security.selinux")
        capsys.readouterr()
        # Host B alone (its own sqlite ledger) would call A's live state stale.
        alone = _host_conf(tmp_path, cluster, "hb", ledger="sqlite")
        assert main(["doctor", "--json", "--config", str(alone), str(img)]) in (0, 1)
        report = json.loads(capsys.readouterr().out)
        assert any(f["kind"] == "refcount" for f in report["findings"])
        # With the fleet ledger it asks the cluster and names the host that holds it.
        main(["doctor", "--json", "--config", str(conf_b), str(img)])
        report = json.loads(capsys.readouterr().out)
        assert report["findings"] == []
        uses = report["files"][0]["domains"]
        assert [u["name"] for u in uses] == ["vm on host ha"]
        assert main(["recover", "--apply", "--config", str(conf_b), str(img)]) == 0
        assert os.getxattr(img, "security.selinux") == labelled  # left alone
        capsys.readouterr()
        assert main(["restore", "--config", str(conf_a), str(xml)]) == 0
        assert os.getxattr(img, "security.selinux") == orig
        client = FleetClient(fleet.settings("probe"))
        assert wait_until(lambda: client.prefix(f"{fleet.prefix}file/") == [], 10)
    finally:
        fleet.stop_keepers()


def test_sticky_label_of_a_dead_host_can_be_taken_over(fleet: Fleet) -> None:
    a = fleet.ledger("ha", keep_labels=("db",), ttl=SHORT_TTL)
    b = fleet.ledger("hb", keep_labels=("db",))
    level = a.allocate("db")
    with pytest.raises(SecurityError, match="is not this host's to hand over"):
        b.migrate("db", "hb")  # ha is alive: only ha may hand it over
    pid = keeper_pid(fleet.root / "ha")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # host ha dies
    client = FleetClient(fleet.settings("probe"))
    assert wait_until(lambda: client.get(f"{fleet.prefix}hosts/ha") is None, SHORT_TTL * 4)
    # Its sticky pair did not lapse with it, and another host may now take it over.
    assert any(v["domain"] == "db" for v in fleet.pairs().values())
    assert b.migrate("db", "hb") == level
    assert b.allocate("db") == level


def test_static_labels_and_libvirt_domains_are_reserved_fleet_wide(
    cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "libvirt"
    run.mkdir()
    (run / "ol8.xml").write_text(
        "<domstatus state='running' pid='1'><domain type='kvm' id='3'><name>ol8</name>"
        "<memory>65536</memory><seclabel type='dynamic' model='selinux' relabel='yes'>"
        "<label>system_u:system_r:svirt_t:s0:c249,c396</label>"
        "<imagelabel>system_u:object_r:svirt_image_t:s0:c249,c396</imagelabel>"
        "</seclabel></domain></domstatus>"
    )
    conf_a = _host_conf(tmp_path, cluster, "ha")
    conf_a.write_text(conf_a.read_text() + f'libvirt_run_dir = "{run}"\n')
    conf_b = _host_conf(tmp_path, cluster, "hb")
    static = tmp_path / "static.xml"
    static.write_text(
        "<domain type='kvm'><name>st</name><os><type>hvm</type></os>"
        "<seclabel type='static' model='selinux' relabel='no'>"
        "<label>system_u:system_r:svirt_t:s0:c5,c6</label></seclabel></domain>"
    )
    dyn = tmp_path / "dyn.xml"
    dyn.write_text("<domain type='kvm'><name>dyn</name><os><type>hvm</type></os></domain>")
    fleet = Fleet(cluster, tmp_path, _prefix(tmp_path))
    try:
        assert main(["label", "--config", str(conf_a), str(dyn)]) == 0  # syncs libvirt's
        assert main(["label", "--config", str(conf_b), str(static)]) == 0
        held = {(v["domain"], v["host"], v["kind"]) for v in fleet.pairs().values()}
        assert ("libvirt:ol8", "ha", "dynamic") in held
        assert ("s0:c5,c6", "hb", "st") in fleet.statics()
        capsys.readouterr()
        # Another host cannot use either level: libvirt's error text, naming the holder.
        other = fleet.ledger("hc")
        with pytest.raises(SecurityError, match=r"by domain libvirt:ol8 on host ha\)"):
            other.reserve("x", "s0:c249,c396")
        with pytest.raises(
            SecurityError,
            match=r"MCS level for existing domain label s0:c5,c6 already reserved "
            r"\(by domain st on host hb\)",
        ):
            other.reserve("y", "s0:c5,c6")  # a dynamic level equal to a static label
        assert main(["restore", "--config", str(conf_a), str(dyn)]) == 0
        assert main(["restore", "--config", str(conf_b), str(static)]) == 0
    finally:
        fleet.stop_keepers()


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "pki")
    c = EtcdCluster(tmp_path / "etcd", size=1, certs=certs).start()
    fleet = Fleet(c, tmp_path, "/tls/")
    try:
        a = fleet.ledger(
            "ha", ca=str(certs.ca), cert=str(certs.client_cert), key=str(certs.client_key)
        )
        level = a.allocate("vm")
        assert c.endpoints[0].startswith("https://")
        assert a.held_elsewhere(level) is None and a.levels_of("vm") == [level]
        # Without the client certificate the cluster is not reachable for svirt.
        b = fleet.ledger("hb", ca=str(certs.ca))
        with pytest.raises(FleetUnavailable, match=c.endpoints[0]):
            b.allocate("other")
    finally:
        fleet.stop_keepers()
        c.stop()


def test_generic_claim_is_create_if_absent_under_a_lease(fleet: Fleet) -> None:
    """The seam another per-VM reservation (a uid:gid identity) would use."""
    client = FleetClient(fleet.settings("ha"))
    lease = client.grant(SHORT_TTL)
    ok, _rev = client.claim("identity", "107:107", {"domain": "vm1"}, lease)
    again, _rev = client.claim("identity", "107:107", {"domain": "vm2"}, None)
    assert (ok, again) == (True, False)
    assert client.get(f"{fleet.prefix}identity/107:107") is not None
    client.revoke(lease)
    assert client.get(f"{fleet.prefix}identity/107:107") is None


def test_forget_gives_up_a_pair_that_follows_a_domain(
    cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf_a = _host_conf(tmp_path, cluster, "ha")
    conf_a.write_text(conf_a.read_text() + 'keep_labels = ["db"]\n')
    fleet = Fleet(cluster, tmp_path, _prefix(tmp_path))
    try:
        a = fleet.ledger("ha", keep_labels=("db",))
        level = a.allocate("db")
        assert main(["fleet", "forget", "db", "--config", str(conf_a)]) == 1
        assert "holds its MCS level here; stop it first" in capsys.readouterr().err
        a.release("db")
        assert any(v["domain"] == "db" for v in fleet.pairs().values())  # still follows it
        assert main(["fleet", "forget", "db", "--config", str(conf_a)]) == 0
        assert capsys.readouterr().out == (
            f"MCS level {level} no longer follows domain db; it is free\n"
        )
        assert fleet.pairs() == {}
        client = FleetClient(fleet.settings("probe"))
        assert client.get(f"{fleet.prefix}sticky/db") is None
        assert main(["fleet", "forget", "db", "--config", str(conf_a)]) == 1
        assert "no MCS level follows domain db" in capsys.readouterr().err
    finally:
        fleet.stop_keepers()
