"""The fleet ledger on a real 3-member etcd cluster (issue 15): collisions, throughput
and allocation latency.

Everything below runs against a real etcd cluster (Debian ``etcd-server``, three members
on loopback ports, started and killed by this script); nothing is modelled except the
rival "independent draws", which is exactly what per-host ledgers do.

1. **Fleet**: ``--hosts`` hosts (100) each start ``--vms`` VMs (1,000), then churn
   (each host stops a random 10 % of its VMs and starts as many, ``--churn`` rounds).
   - *svirt's fleet ledger*: every host is an ``EtcdLedger`` with its own state
     directory and host id; the hosts are driven by ``--workers`` processes at once.
     Each VM's holding interval (allocate returned → release called, one system-wide
     monotonic clock) is logged; a collision is two VMs whose intervals on one pair
     overlap.
   - *independent per-host draws*: the same fleet and churn, each host drawing from its
     own ledger (the sparse pool svirt uses on one host: unique per host, blind to the
     others), the same overlap count.
   - *the issue's "≈61 % per 1,000"*: 2,000 trials of 1,000 VMs drawn by independent
     hosts; the share of trials with at least one shared pair.
2. **Latency at occupancy** (10 %, 90 %, 99 % of the pairs of ``--cats`` categories,
   reached by bulk transactions, untimed): one client allocates and releases
   (occupancy stays put), interleaved one for one with the rival that a cluster-wide
   ledger without svirt's blocks would be: draw a random pair and create it if absent,
   retrying on a taken pair (1/(1-p) transactions on average). Median and p99 of each.

    .venv/bin/python bench/bench_fleet.py                  # the README's numbers
    .venv/bin/python bench/bench_fleet.py --vms 100        # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from etcd_cluster import EtcdCluster
from svirt.security.fleet import (
    EtcdLedger,
    FleetClient,
    FleetSettings,
    _absent,
    _b64,
    _delete,
    _put,
)
from svirt.security.mcs import MemoryPoolStore, PairSpace, SparsePool, pair_count
from svirt.state.db import connect

CATS = 1024


def settings(endpoints: list[str], prefix: str, host: str, state: Path) -> FleetSettings:
    # A lease far longer than the run: the bench starts no keepers (100 processes).
    return FleetSettings(tuple(endpoints), prefix, host, 3600, 5.0, str(state))


# --- 1. the fleet ---------------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    """One driver process: its hosts allocate VMs round-robin, then churn."""
    cfg = json.loads(args.worker)
    rng = random.Random(cfg["seed"])
    ledgers = {}
    for host in cfg["hosts"]:
        state = Path(cfg["root"]) / host
        conn = connect(state)
        ledgers[host] = EtcdLedger(
            conn,
            0,
            0,
            CATS - 1,
            settings(cfg["endpoints"], cfg["prefix"], host, state),
            keeper=False,
        )
    live: dict[str, dict[str, tuple[str, float]]] = {h: {} for h in ledgers}
    events: list[tuple[str, str, float, float]] = []
    lat: list[float] = []
    n = 0

    def start(host: str) -> None:
        nonlocal n
        name = f"vm{n}"
        n += 1
        t0 = time.monotonic()
        level = ledgers[host].allocate(name)
        t1 = time.monotonic()
        lat.append(t1 - t0)
        live[host][name] = (level, t1)

    def stop(host: str, name: str) -> None:
        level, since = live[host].pop(name)
        events.append((level, host, since, time.monotonic()))
        ledgers[host].release(name)

    t_begin = time.monotonic()
    for _ in range(cfg["vms"]):
        for host in ledgers:
            start(host)
    for _ in range(cfg["churn"]):
        for host in ledgers:
            names = rng.sample(sorted(live[host]), max(1, len(live[host]) // 10))
            for name in names:
                stop(host, name)
            for _ in names:
                start(host)
    elapsed = time.monotonic() - t_begin
    end = time.monotonic()
    for host, vms in live.items():
        for level, since in vms.values():
            events.append((level, host, since, end + 1e9))
    Path(cfg["out"]).write_text(json.dumps({"events": events, "lat": lat, "elapsed": elapsed}))
    return 0


def overlaps(events: list[tuple[str, str, float, float]]) -> int:
    """Pairs of VMs that held one level at the same time."""
    by_level: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for level, _host, t0, t1 in events:
        by_level[level].append((t0, t1))
    clashes = 0
    for spans in by_level.values():
        spans.sort()
        for i, (_a0, a1) in enumerate(spans):
            for b0, _b1 in spans[i + 1 :]:
                if b0 >= a1:
                    break
                clashes += 1
    return clashes


def independent_fleet(hosts: int, vms: int, churn: int, seed: int) -> int:
    """The same fleet with a ledger per host: the overlap count of its holdings."""
    rng = random.Random(seed)
    size = pair_count(CATS)
    pools = [SparsePool(MemoryPoolStore(size), size) for _ in range(hosts)]
    live: list[dict[int, tuple[int, int]]] = [{} for _ in range(hosts)]
    events: list[tuple[str, str, float, float]] = []
    clock = 0
    n = 0
    for _ in range(vms):
        for h in range(hosts):
            idx = pools[h].draw(rng)
            assert idx is not None
            clock += 1
            live[h][n] = (idx, clock)
            n += 1
    for _ in range(churn):
        for h in range(hosts):
            names = rng.sample(sorted(live[h]), max(1, len(live[h]) // 10))
            for name in names:
                idx, since = live[h].pop(name)
                clock += 1
                events.append((str(idx), str(h), since, clock))
                pools[h].put(idx)
            for _ in names:
                idx = pools[h].draw(rng)
                assert idx is not None
                clock += 1
                live[h][n] = (idx, clock)
                n += 1
    for h in range(hosts):
        for idx, since in live[h].values():
            events.append((str(idx), str(h), since, clock + 1))
    return overlaps(events)


def share_with_clash(trials: int, vms: int, seed: int) -> float:
    rng = random.Random(seed)
    size = pair_count(CATS)
    hit = 0
    for _ in range(trials):
        seen: set[int] = set()
        for _ in range(vms):
            idx = rng.randrange(size)
            if idx in seen:
                hit += 1
                break
            seen.add(idx)
    return hit / trials


def run_fleet(cluster: EtcdCluster, root: Path, args: argparse.Namespace) -> dict[str, object]:
    hosts = [f"host{i:03d}" for i in range(args.hosts)]
    procs = []
    outs = []
    for w in range(args.workers):
        out = root / f"worker{w}.json"
        outs.append(out)
        cfg = {
            "hosts": hosts[w :: args.workers],
            "root": str(root / "hosts"),
            "endpoints": cluster.endpoints,
            "prefix": "/fleet/",
            "vms": args.vms,
            "churn": args.churn,
            "seed": args.seed + w,
            "out": str(out),
        }
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg)]))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("a fleet worker failed")
    events: list[tuple[str, str, float, float]] = []
    lat: list[float] = []
    elapsed = 0.0
    for out in outs:
        data = json.loads(out.read_text())
        events += [tuple(e) for e in data["events"]]  # type: ignore[misc]
        lat += data["lat"]
        elapsed = max(elapsed, data["elapsed"])
    client = FleetClient(settings(cluster.endpoints, "/fleet/", "probe", root))
    held = client.prefix("/fleet/pair/", keys_only=True)
    return {
        "allocations": len(lat),
        "ledger_collisions": overlaps(events),
        "held_at_end": len(held),  # pair keys in etcd: one per running VM
        "rate": len(lat) / elapsed,
        "median_ms": statistics.median(lat) * 1e3,
        "p99_ms": sorted(lat)[int(len(lat) * 0.99)] * 1e3,
    }


# --- 2. latency at occupancy --------------------------------------------------------------


def fill(client: FleetClient, prefix: str, space: PairSpace, idxs: list[int]) -> None:
    value = json.dumps({"host": "filler", "domain": "filler", "kind": "dynamic"})
    for i in range(0, len(idxs), 128):  # etcd's default --max-txn-ops
        ops = [
            {"request_put": {"key": _b64(f"{prefix}pair/{j:07d}"), "value": _b64(value)}}
            for j in idxs[i : i + 128]
        ]
        client.txn([], ops)


def draw_and_retry(client: FleetClient, prefix: str, space: PairSpace, rng: random.Random) -> str:
    """The rival: a random pair, created if absent, again until one is free."""
    while True:
        idx = rng.randrange(space.size)
        key = f"{prefix}pair/{idx:07d}"
        res = client.txn([_absent(key)], [_put(key, {"host": "rival", "domain": "x"})])
        if res.get("succeeded"):
            return key


def run_occupancy(
    cluster: EtcdCluster, root: Path, args: argparse.Namespace
) -> list[dict[str, float]]:
    space = PairSpace(0, 0, args.cats - 1)
    prefix = "/occ/"
    st = settings(cluster.endpoints, prefix, "bench", root / "occ")
    conn = connect(root / "occ")
    ledger = EtcdLedger(conn, 0, 0, args.cats - 1, st, keeper=False)
    client = ledger.client
    rng = random.Random(args.seed)
    order = list(range(space.size))
    rng.shuffle(order)
    filled = 0
    rows = []
    for occ in (0.10, 0.90, 0.99):
        target = int(space.size * occ)
        fill(client, prefix, space, order[filled:target])
        filled = target
        ours: list[float] = []
        rival: list[float] = []
        for i in range(args.samples):
            for which in (0, 1) if i % 2 == 0 else (1, 0):
                t0 = time.perf_counter()
                if which == 0:
                    ledger.allocate("probe")
                    ours.append(time.perf_counter() - t0)
                    ledger.release("probe")
                else:
                    key = draw_and_retry(client, prefix, space, rng)
                    rival.append(time.perf_counter() - t0)
                    client.txn([], [_delete(key)])
        rows.append(
            {
                "occupancy": occ,
                "ours_median_ms": statistics.median(ours) * 1e3,
                "ours_p99_ms": sorted(ours)[int(len(ours) * 0.99)] * 1e3,
                "ours_per_s": len(ours) / sum(ours),
                "rival_median_ms": statistics.median(rival) * 1e3,
                "rival_p99_ms": sorted(rival)[int(len(rival) * 0.99)] * 1e3,
                "rival_per_s": len(rival) / sum(rival),
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--vms", type=int, default=1000, help="VMs per host")
    ap.add_argument("--churn", type=int, default=2, help="rounds of 10 %% stop/start")
    ap.add_argument("--workers", type=int, default=4, help="driver processes")
    ap.add_argument("--cats", type=int, default=CATS, help="categories for the occupancy part")
    ap.add_argument("--samples", type=int, default=200, help="allocations per occupancy")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--skip-fleet", action="store_true")
    ap.add_argument("--skip-occupancy", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    root = Path(tempfile.mkdtemp(prefix="svirt-bench-fleet-"))
    cluster = EtcdCluster(root / "etcd").start()
    try:
        print(f"etcd: 3 members at {', '.join(cluster.endpoints)}")
        if not args.skip_fleet:
            t0 = time.monotonic()
            fleet = run_fleet(cluster, root, args)
            indep = independent_fleet(args.hosts, args.vms, args.churn, args.seed)
            share = share_with_clash(2000, 1000, args.seed)
            print(
                f"\n1. fleet: {args.hosts} hosts x {args.vms} VMs, {args.churn} churn rounds "
                f"({fleet['allocations']} allocations, {args.workers} driver processes, "
                f"{time.monotonic() - t0:.0f} s)"
            )
            print(f"{'':34}{'svirt fleet ledger':>20}{'independent draws':>20}")
            print(
                f"{'VM pairs sharing a category pair':34}{fleet['ledger_collisions']:>20}"
                f"{indep:>20}"
            )
            print(
                f"{'VMs running at the end':34}{fleet['held_at_end']:>20}"
                f"{args.hosts * args.vms:>20}"
            )
            print(
                f"ledger: {fleet['rate']:.0f} allocations/s in all, latency median "
                f"{fleet['median_ms']:.1f} ms, p99 {fleet['p99_ms']:.1f} ms"
            )
            print(
                f"independent draws, 1,000 VMs on shared storage: {share:.1%} of 2,000 "
                "trials have at least one shared pair (the issue's ≈61 %)"
            )
        if args.skip_occupancy:
            return 0
        rows = run_occupancy(cluster, root, args)
        print(
            f"\n2. one client, c0.c{args.cats - 1} ({pair_count(args.cats)} pairs), "
            f"{args.samples} allocations per row, interleaved"
        )
        print(
            f"{'occupancy':>10}{'svirt median':>14}{'p99':>9}{'/s':>7}"
            f"{'draw+retry median':>19}{'p99':>9}{'/s':>7}{'ratio':>8}"
        )
        for r in rows:
            print(
                f"{r['occupancy']:>10.0%}{r['ours_median_ms']:>11.1f} ms{r['ours_p99_ms']:>7.1f} ms"
                f"{r['ours_per_s']:>7.0f}{r['rival_median_ms']:>16.1f} ms"
                f"{r['rival_p99_ms']:>7.1f} ms{r['rival_per_s']:>7.0f}"
                f"{r['rival_median_ms'] / r['ours_median_ms']:>7.2f}x"
            )
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
