"""Stress (issue 5): 20 start/stop cycles of 4 VMs in parallel, then prove that nothing is
left behind: no label or owner changed, no ``trusted.libvirt.*``/``trusted.svirt.*``
xattr, no ledger reservation, no domain record, no extra mount, no QEMU or monitor.

Each VM is driven by its own process (start and stop race against the other three);
every cycle starts all four before stopping any. Exit status 1 when anything is left.

    .venv/bin/python bench/stress_lifecycle.py [--cycles 20] [--vms 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from svirt.conf import config_from_mapping
from svirt.domain import parse_domain
from svirt.launch.lifecycle import start_domain, stop_domain
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore

ORIGINAL = b"system_u:object_r:virt_image_t:s0\0"


def xml(name: str, image: Path) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{image}'/><target dev='vda' bus='virtio'/></disk>"
        f"</devices></domain>"
    )


def worker(
    base: str,
    name: str,
    cycles: int,
    started: multiprocessing.synchronize.Barrier,
    stopped: multiprocessing.synchronize.Barrier,
) -> None:
    cfg = config_from_mapping({"security_driver": ["selinux"], "state_dir": f"{base}/state"})
    dom = parse_domain(xml(name, Path(base) / f"{name}.img"))
    for _ in range(cycles):
        start_domain(cfg, dom)
        started.wait()
        stop_domain(cfg, name, force=True)
        stopped.wait()


def snapshot(path: Path) -> tuple[int, int, int, dict[str, bytes]]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode, {n: os.getxattr(path, n) for n in os.listxattr(path)}


def qemu_processes(base: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if base.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--vms", type=int, default=4)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="svirt-stress-", dir="/var/tmp"))
    base.chmod(0o755)
    names = [f"stress{i}" for i in range(args.vms)]
    for i, name in enumerate(names):
        img = base / f"{name}.img"
        img.write_bytes(b"")
        os.truncate(img, 1 << 20)
        os.chown(img, 1000 + i, 1000 + i)
        os.setxattr(img, "security.selinux", ORIGINAL)
    before = {n: snapshot(base / f"{n}.img") for n in names}
    mounts = Path("/proc/self/mountinfo").read_text()
    ctx = multiprocessing.get_context("fork")
    started, stopped = ctx.Barrier(args.vms), ctx.Barrier(args.vms)
    t0 = time.perf_counter()
    procs = [
        ctx.Process(target=worker, args=(str(base), n, args.cycles, started, stopped))
        for n in names
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    problems = [f"worker {p.name} exited {p.exitcode}" for p in procs if p.exitcode != 0]
    time.sleep(0.2)
    for n in names:
        if snapshot(base / f"{n}.img") != before[n]:
            problems.append(f"{n}.img differs from before")
    cfg = config_from_mapping({"security_driver": ["selinux"], "state_dir": f"{base}/state"})
    mgr = SecurityManager(cfg)
    if mgr.selinux is not None and list(mgr.selinux.ledger.reservations()):
        problems.append("ledger reservations left")
    if list(DomainStore(cfg.state_dir).records()):
        problems.append("domain records left")
    if Path("/proc/self/mountinfo").read_text() != mounts:
        problems.append("mounts changed")
    left = qemu_processes(str(base))
    if left:
        problems.append(f"processes left: {left}")
    total = args.cycles * args.vms
    print(
        f"{total} start/stop pairs ({args.cycles} cycles x {args.vms} VMs in parallel) in "
        f"{elapsed:.1f} s ({elapsed / args.cycles:.2f} s per cycle)"
    )
    if problems:
        print("LEFT BEHIND: " + "; ".join(problems))
    else:
        print("nothing left behind: labels, owners, xattrs, ledger, records, mounts, processes")
    shutil.rmtree(base, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
