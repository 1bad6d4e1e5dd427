"""Label + restore of a domain with 32 disks: SecurityManager against a baseline loop
that issues only the xattr system calls (issue 3, target (b): ≤ 2× the baseline).

The baseline is what libvirt's SELinux driver does to one writable disk with
``remember_owner`` on (libvirt-security-spec §7.2, §7.3.1, §6.1), without locks, journal,
state or checks, straight through ``os.getxattr``/``os.setxattr``/``os.removexattr``:

- label:   get ``security.selinux``; get ``ref_selinux`` (ENODATA); set the remembered
           label, the timestamp and the refcount; set ``security.selinux``;
- restore: get ``ref_selinux``; get the timestamp; remove the refcount; get and remove
           the remembered label; remove the timestamp; set ``security.selinux`` back.

A second baseline adds libvirt's own metadata locks (open read/write, ``fcntl`` on byte 1,
per path), which libvirt takes whenever it remembers labels; it is printed for context.

svirt does the same calls plus everything that makes them safe: generating the label
(MCS ledger), the domain record, pinning each inode (O_PATH), libvirt's metadata locks,
the intent journal (a snapshot of every file, durably, before the first change), and on
restore reading the record back and releasing the level.

Images and the state directory are on tmpfs (/dev/shm) so the disk's fsync does not
hide the software's cost. DAC is off for the target measurement (the baseline has no
chown); ``--dac`` adds it to both sides (chown plus the ``*_dac`` xattrs). With
``--profile`` a cProfile summary of svirt's side follows.

    .venv/bin/python bench/bench_label.py [--disks 32] [--rounds 50] [--dac] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import errno
import fcntl
import os
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from svirt.conf import config_from_mapping
from svirt.domain import parse_domain
from svirt.host.ids import resolve_gid, resolve_uid
from svirt.security.manager import SecurityManager
from svirt.security.remember import boot_time

ORIG = b"system_u:object_r:user_tmp_t:s0"
IMG = b"system_u:object_r:svirt_image_t:s0:c41,c264"
SEL = "security.selinux"
P = "trusted.libvirt.security."


def baseline_label(paths: list[str], dac: tuple[int, int] | None) -> None:
    ts = str(boot_time()).encode()
    for p in paths:
        current = os.getxattr(p, SEL)
        try:
            os.getxattr(p, P + "ref_selinux")
        except OSError as exc:
            assert exc.errno == errno.ENODATA
        os.setxattr(p, P + "selinux", current.rstrip(b"\0"))
        os.setxattr(p, P + "timestamp_selinux", ts)
        os.setxattr(p, P + "ref_selinux", b"1")
        os.setxattr(p, SEL, IMG + b"\0")
    if dac is None:
        return
    for p in paths:
        st = os.stat(p)
        try:
            os.getxattr(p, P + "ref_dac")
        except OSError as exc:
            assert exc.errno == errno.ENODATA
        os.setxattr(p, P + "dac", f"+{st.st_uid}:+{st.st_gid}".encode())
        os.setxattr(p, P + "timestamp_dac", ts)
        os.setxattr(p, P + "ref_dac", b"1")
        os.chown(p, *dac)


def baseline_restore(paths: list[str], dac: tuple[int, int] | None) -> None:
    for p in paths:
        os.getxattr(p, P + "ref_selinux")
        os.getxattr(p, P + "timestamp_selinux")
        os.removexattr(p, P + "ref_selinux")
        label = os.getxattr(p, P + "selinux")
        os.removexattr(p, P + "selinux")
        os.removexattr(p, P + "timestamp_selinux")
        os.setxattr(p, SEL, label + b"\0")
    if dac is None:
        return
    for p in paths:
        os.getxattr(p, P + "ref_dac")
        os.getxattr(p, P + "timestamp_dac")
        os.removexattr(p, P + "ref_dac")
        owner = os.getxattr(p, P + "dac").decode()
        os.removexattr(p, P + "dac")
        os.removexattr(p, P + "timestamp_dac")
        uid, gid = (int(x.lstrip("+")) for x in owner.split(":"))
        os.chown(p, uid, gid)


def with_locks(paths: list[str], work: object) -> None:
    """libvirt's metadata locks around a list run (spec §9.3): sorted paths, each opened
    read/write and locked on byte 1; libvirt does this too when remember_owner is on."""
    fds = []
    for p in sorted(paths):
        fd = os.open(p, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1, os.SEEK_SET)
        fds.append(fd)
    try:
        assert callable(work)
        work()
    finally:
        for fd in fds:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1, os.SEEK_SET)
            os.close(fd)


def make_images(d: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        p = d / f"disk{i:02d}.img"
        p.write_bytes(b"")
        os.chmod(p, 0o600)
        os.setxattr(p, SEL, ORIG + b"\0")
        paths.append(str(p))
    return paths


def domain_xml(paths: list[str]) -> str:
    disks = "".join(
        f"<disk type='file' device='disk'><source file='{p}'/>"
        f"<target dev='vd{chr(97 + i // 26) if i >= 26 else ''}{chr(97 + i % 26)}'/></disk>"
        for i, p in enumerate(paths)
    )
    return (
        "<domain type='kvm'><name>bench</name><memory>65536</memory>"
        f"<seclabel type='dynamic' model='selinux'/><devices>{disks}</devices></domain>"
    )


def check_clean(paths: list[str]) -> None:
    for p in paths:
        assert os.getxattr(p, SEL) == ORIG + b"\0", p
        assert not [n for n in os.listxattr(p) if n.startswith(P)], p
        assert os.stat(p).st_uid == 0, p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--disks", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--dir", type=Path, default=Path("/dev/shm"))
    ap.add_argument("--dac", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="svirt-bench-label-", dir=args.dir))
    try:
        paths = make_images(work, args.disks)
        cfg = config_from_mapping(
            {
                "security_driver": ["selinux"],
                "state_dir": str(work / "state"),
                "dynamic_ownership": args.dac,
            }
        )
        qemu = (resolve_uid(cfg.user), resolve_gid(cfg.group)) if args.dac else None
        mgr = SecurityManager(cfg)
        dom = parse_domain(domain_xml(paths))

        def ours() -> None:
            mgr.label_domain(dom)
            mgr.restore_domain("bench")

        def base() -> None:
            baseline_label(paths, qemu)
            baseline_restore(paths, qemu)

        def base_locked() -> None:
            with_locks(paths, lambda: baseline_label(paths, qemu))
            with_locks(paths, lambda: baseline_restore(paths, qemu))

        for fn in (ours, base, base_locked):  # warm up; each must leave the files as found
            fn()
            check_clean(paths)
        t_ours, t_base, t_locked = [], [], []
        for _ in range(args.rounds):  # in turns, so load elsewhere hits all alike
            t0 = time.perf_counter()
            ours()
            t1 = time.perf_counter()
            base()
            t2 = time.perf_counter()
            base_locked()
            t3 = time.perf_counter()
            t_ours.append(t1 - t0)
            t_base.append(t2 - t1)
            t_locked.append(t3 - t2)
        check_clean(paths)

        o, b = statistics.median(t_ours), statistics.median(t_base)
        lk = statistics.median(t_locked)
        what = "SELinux + DAC" if args.dac else "SELinux"
        print(
            f"label + restore, {args.disks} disks, {what}, state and images on {args.dir}, "
            f"median of {args.rounds} rounds"
        )
        print(f"  baseline (xattr calls only): {b * 1e3:8.2f} ms")
        print(f"  baseline + metadata locks:   {lk * 1e3:8.2f} ms  (libvirt with remember_owner)")
        print(f"  svirt SecurityManager:       {o * 1e3:8.2f} ms")
        ratio = o / b
        verdict = "meets" if ratio <= 2 else "MISSES"
        print(f"  ratio: {ratio:.1f}× the baseline (target (b) ≤ 2×: {verdict})")
        print(f"         {o / lk:.1f}× the baseline with locks")

        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.rounds):
                ours()
            prof.disable()
            print()
            print(f"cProfile of svirt's side, {args.rounds} rounds (cumulative):")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
