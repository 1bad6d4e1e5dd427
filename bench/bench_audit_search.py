"""``svirt audit search`` against ``ausearch`` and ``grep -c`` on the same generated log.

Generates (or reuses) a realistic log with ``bench/gen_audit_log.py``, warms the page
cache, then times side by side, best of ``--repeat`` runs, output to /dev/null:

- ``grep -c 'type=AVC'`` over the file: the floor (reading the file once);
- ``ausearch -if LOG <query> --raw``;
- ``svirt audit search -if LOG <query> --raw`` (the fast engine) and with ``--exact``
  (every line read and grouped), both as commands, interpreter start-up included.

It prints the times, the ratio of each to ausearch and to grep, and checks that the three
searches return the same events. Default size 128 MiB (well under 2 minutes with the
generation); the issue's number is ``--size 1G``.

    .venv/bin/python bench/bench_audit_search.py
    .venv/bin/python bench/bench_audit_search.py --size 1G
    .venv/bin/python bench/bench_audit_search.py --size 1G --enriched --query "-m USER_AVC -sv no"
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import gen_audit_log  # noqa: E402

SVIRT = str(Path(sys.executable).parent / "svirt")
AUSEARCH = shutil.which("ausearch") or "/usr/sbin/ausearch"
_STAMP = re.compile(rb"msg=audit\(\d+\.\d+:(\d+)\)")


def log_file(size: int, enriched: bool, seed: int, directory: Path) -> Path:
    path = directory / f"svirt-bench-audit-{size}-{seed}-{'enriched' if enriched else 'raw'}.log"
    if path.exists() and path.stat().st_size >= size:
        print(f"reusing {path} ({path.stat().st_size / 2**20:.0f} MiB)")
        return path
    t = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        summary = gen_audit_log.generate(fh, size=size, enriched=enriched, seed=seed)
    tmp.rename(path)
    print(
        f"generated {path}: {summary.bytes / 2**20:.0f} MiB, {summary.lines} records, "
        f"{summary.events} events, {summary.qemu_denials} QEMU denials "
        f"({time.perf_counter() - t:.1f} s)"
    )
    return path


def warm(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def timed(cmd: list[str], repeat: int) -> tuple[float, bytes]:
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    best = float("inf")
    out = b""
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
        best = min(best, time.perf_counter() - t)
        out = proc.stdout
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[:300]}")
    return best, out


def serials(out: bytes) -> set[int]:
    return {int(m.group(1)) for m in _STAMP.finditer(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="128M", help="log size: 128M (default), 1G, ...")
    p.add_argument("--enriched", action="store_true", help="ENRICHED log format")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    p.add_argument("--query", default="-m AVC -c qemu-kvm", help="ausearch options to time")
    p.add_argument("--log", type=Path, help="use this log instead of generating one")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where to keep the log")
    args = p.parse_args(argv)
    if not os.access(AUSEARCH, os.X_OK):
        raise SystemExit("ausearch is not installed (scripts/setup.sh installs auditd)")
    size = gen_audit_log.parse_size(args.size)
    log = args.log or log_file(size, args.enriched, args.seed, args.dir)
    warm(log)
    query = shlex.split(args.query)
    mib = log.stat().st_size / 2**20
    first_type = query[query.index("-m") + 1].split(",")[0] if "-m" in query else "AVC"
    runs = {
        "grep -c": [shutil.which("grep") or "grep", "-c", f"type={first_type}", str(log)],
        "ausearch": [AUSEARCH, "-if", str(log), *query, "--raw"],
        "svirt": [SVIRT, "audit", "search", "-if", str(log), *query, "--raw"],
        "svirt --exact": [SVIRT, "audit", "search", "-if", str(log), *query, "--raw", "--exact"],
    }
    times: dict[str, float] = {}
    outputs: dict[str, bytes] = {}
    for name, cmd in runs.items():
        times[name], outputs[name] = timed(cmd, args.repeat)
    found = {name: serials(outputs[name]) for name in ("ausearch", "svirt", "svirt --exact")}
    same = found["ausearch"] == found["svirt"] == found["svirt --exact"]
    print(f"\nlog {log} ({mib:.0f} MiB), query: {args.query}, best of {args.repeat}")
    print(f"{'':15} {'seconds':>8} {'MiB/s':>8} {'vs ausearch':>12} {'vs grep -c':>11}")
    for name, secs in times.items():
        print(
            f"{name:15} {secs:8.2f} {mib / secs:8.0f} {secs / times['ausearch']:11.2f}x "
            f"{secs / times['grep -c']:10.1f}x"
        )
    print(
        f"\nevents found: ausearch {len(found['ausearch'])}, svirt {len(found['svirt'])}, "
        f"svirt --exact {len(found['svirt --exact'])}: {'same' if same else 'DIFFERENT'}"
    )
    speedup = times["ausearch"] / times["svirt"]
    print(f"svirt is {speedup:.2f}x {'faster' if speedup >= 1 else 'slower'} than ausearch")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
