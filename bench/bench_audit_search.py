"""``svirt audit search`` against ``ausearch`` 3.0.9, query by query, on several log shapes.

Logs (generated once into ``--dir`` and reused): the realistic generator
(``gen_audit_log_realistic.py``, which svirt was never tuned on) at 40 and 140 events per
second of log time, raw, ENRICHED and mixed, and the project's own generator
(``gen_audit_log.py``, about 138 events per second), raw and ENRICHED.

Queries (the issue's table): ``-m AVC -c qemu-kvm``, ``-m AVC``, ``-m SYSCALL``,
``-k exec``, ``-p PID`` (a pid from the middle of the log), ``-ts``/``-te`` a 10-minute
window in the middle of the log, and ``-m AVC -c qemu-kvm -i``; default output format.

Each query runs ``--repeat`` times per mode, ausearch and svirt interleaved, output to a
pipe that is drained and checked: the two outputs must be the same bytes. Modes: pinned
to one CPU (``taskset -c 0``) and unpinned. Printed per query: the medians (wall
seconds, and CPU seconds of the child, which a machine shared with other work disturbs
less) and the ratio ausearch ÷ svirt (> 1: svirt is faster). The page cache is warmed
first. The load average is printed with the results.

    .venv/bin/python bench/bench_audit_search.py                 # 128 MiB logs
    .venv/bin/python bench/bench_audit_search.py --size 1G --repeat 3
    .venv/bin/python bench/bench_audit_search.py --logs r40-mixed --queries "-k exec"
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import gen_audit_log  # noqa: E402
import gen_audit_log_realistic  # noqa: E402

SVIRT = str(Path(sys.executable).parent / "svirt")
AUSEARCH = shutil.which("ausearch") or "/usr/sbin/ausearch"
TASKSET = shutil.which("taskset") or "taskset"
ENV = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
_SEC = re.compile(rb"msg=audit\((\d+)\.\d+:\d+\): .*? pid=(\d+)")

# name -> (generator, options)
LOGS = {
    "r40-mixed": ("realistic", {"rate": 40.0, "enriched_fraction": 0.5}),
    "r140-raw": ("realistic", {"rate": 140.0, "enriched_fraction": 0.0}),
    "r140-enriched": ("realistic", {"rate": 140.0, "enriched_fraction": 1.0}),
    "project-raw": ("project", {"enriched": False}),
    "project-enriched": ("project", {"enriched": True}),
}
DEFAULT_LOGS = "r40-mixed,r140-raw,r140-enriched,project-raw"
QUERIES = [
    "-m AVC -c qemu-kvm",
    "-m AVC",
    "-m SYSCALL",
    "-k exec",
    "-p PID",
    "-ts WINDOW",
    "-m AVC -c qemu-kvm -i",
]


def make_log(name: str, size: int, seed: int, directory: Path) -> Path:
    kind, opts = LOGS[name]
    path = directory / f"svirt-bench-audit-{name}-{size}-{seed}.log"
    if path.exists() and path.stat().st_size >= size:
        return path
    t = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        if kind == "realistic":
            gen_audit_log_realistic.generate(fh, size=size, seed=seed, **opts)  # type: ignore[arg-type]
        else:
            gen_audit_log.generate(fh, size=size, seed=seed, **opts)  # type: ignore[arg-type]
    tmp.rename(path)
    print(f"generated {path} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return path


def warm(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def middle_facts(path: Path) -> tuple[int, int]:
    """(a second, a pid) from the middle of the log."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(size // 2)
        block = fh.read(1 << 20)
    for m in _SEC.finditer(block):
        return int(m.group(1)), int(m.group(2))
    raise SystemExit(f"{path}: no record with a pid in the middle")


def expand(query: str, path: Path) -> list[str]:
    sec, pid = middle_facts(path)
    words = shlex.split(query.replace("PID", str(pid)))
    if "WINDOW" in words:
        fmt = "%m/%d/%y %H:%M:%S"
        start = time.strftime(fmt, time.gmtime(sec)).split()
        end = time.strftime(fmt, time.gmtime(sec + 600)).split()
        i = words.index("WINDOW")
        words[i : i + 1] = [*start, "-te", *end]
    return words


def run(cmd: list[str], pinned: bool) -> tuple[float, float, bytes]:
    """(wall seconds, child CPU seconds, stdout digest) of one run."""
    if pinned:
        cmd = [TASKSET, "-c", "0", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)
    digest = hashlib.sha256()
    assert proc.stdout is not None
    while block := proc.stdout.read(1 << 20):
        digest.update(block)
    rc = proc.wait()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc not in (0, 1):
        raise SystemExit(f"{cmd} failed with {rc}")
    return wall, cpu, digest.digest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="128M", help="size of each log (128M, 1G, ...)")
    p.add_argument("--logs", default=DEFAULT_LOGS, help=f"comma list of {', '.join(LOGS)}")
    p.add_argument("--queries", action="append", help="ausearch options (repeatable)")
    p.add_argument("--repeat", type=int, default=3, help="runs per tool and mode (median)")
    p.add_argument("--modes", default="pinned,unpinned")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = p.parse_args(argv)
    if not os.access(AUSEARCH, os.X_OK):
        raise SystemExit("ausearch is not installed (scripts/setup.sh installs auditd)")
    size = gen_audit_log.parse_size(args.size)
    queries = args.queries or QUERIES
    modes = args.modes.split(",")
    worst = float("inf")
    same_all = True
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    print(
        f"{'log':17} {'query':24} {'mode':8} {'ausearch s':>10} {'svirt s':>8} "
        f"{'ratio':>6} {'cpu ratio':>9} same"
    )
    for name in args.logs.split(","):
        path = make_log(name, size, args.seed, args.dir)
        warm(path)
        for query in queries:
            words = expand(query, path)
            a_cmd = [AUSEARCH, "-if", str(path), *words]
            s_cmd = [SVIRT, "audit", "search", "-if", str(path), *words]
            for mode in modes:
                aw: list[float] = []
                ac: list[float] = []
                sw: list[float] = []
                sc: list[float] = []
                same = True
                for _ in range(args.repeat):
                    w, c, da = run(a_cmd, mode == "pinned")
                    aw.append(w)
                    ac.append(c)
                    w, c, ds = run(s_cmd, mode == "pinned")
                    sw.append(w)
                    sc.append(c)
                    same = same and da == ds
                a, s = statistics.median(aw), statistics.median(sw)
                ratio = a / s
                cpu_ratio = statistics.median(ac) / max(statistics.median(sc), 1e-9)
                if mode == "pinned":
                    worst = min(worst, ratio)
                same_all = same_all and same
                print(
                    f"{name:17} {query:24} {mode:8} {a:10.2f} {s:8.2f} {ratio:6.2f} "
                    f"{cpu_ratio:9.2f} {'yes' if same else 'NO'}",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"lowest pinned ratio (ausearch ÷ svirt): {worst:.2f}; outputs identical: {same_all}")
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
