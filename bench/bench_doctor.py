"""``svirt doctor`` / ``svirt recover`` and pre-flight timings on real files.

1. doctor over an images directory of N files carrying libvirt's remembered xattrs
   (a quarter from an earlier boot, a quarter held open by a child process, the rest
   left by a "crashed daemon" this boot), with this host's processes scanned by
   ``/proc/*/fd``: total time, per file, and the /proc scan alone.
2. recover --apply over the same files (restores and count fixes under metadata locks).
3. pre-flight of one domain with 32 disks: a cold start (policy loaded) and a warm one.

Run as root: ``.venv/bin/python bench/bench_doctor.py [N]`` (default N = 1000).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from svirt.conf import config_from_mapping
from svirt.doctor import _holders, _processes, examine, recover
from svirt.domain import parse_domain
from svirt.launch.preflight import preflight_check
from svirt.policy.oracle import PolicyOracle
from svirt.security.manager import SecurityManager
from svirt.security.remember import boot_time

LV = "trusted.libvirt.security."


def populate(images: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = images / f"vm{i:05d}.qcow2"
        p.write_bytes(b"x")
        ts = "1749811180" if i % 4 == 0 else str(boot_time())
        os.setxattr(p, "security.selinux", b"system_u:object_r:svirt_image_t:s0:c249,c396\0")
        for name, value in (
            ("selinux", "system_u:object_r:virt_image_t:s0"),
            ("ref_selinux", "1"),
            ("timestamp_selinux", ts),
            ("dac", "+0:+0"),
            ("ref_dac", "1"),
            ("timestamp_dac", ts),
        ):
            os.setxattr(p, LV + name, value.encode())
        paths.append(p)
    return paths


def main() -> None:
    logging.disable(logging.WARNING)  # restore's per-file notes are not what is measured
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="svirt-bench-doctor-") as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        paths = populate(images, n)
        cfg = config_from_mapping(
            {
                "security_driver": ["selinux"],
                "state_dir": str(root / "state"),
                "images_dirs": [str(images)],
                "libvirt_run_dir": str(root / "libvirt"),
            }
        )
        held = paths[1::4]
        code = "import sys; fs=[open(p,'rb') for p in sys.argv[1:]]; print(1,flush=True); input()"
        child = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, held)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "1\n"
            t = time.perf_counter()
            procs = _processes()
            keys = {(os.stat(p).st_dev, os.stat(p).st_ino) for p in paths}
            _holders(procs, keys)
            scan = time.perf_counter() - t
            t = time.perf_counter()
            report = examine(cfg)
            took = time.perf_counter() - t
            print(
                f"doctor: {len(report.files)} files, {len(report.findings)} findings, "
                f"{report.processes} processes: {took * 1000:.0f} ms "
                f"({took / max(1, len(report.files)) * 1e6:.0f} us/file); "
                f"/proc fd scan alone {scan * 1000:.0f} ms"
            )
            t = time.perf_counter()
            rec = recover(cfg, apply=True)
            took = time.perf_counter() - t
            done = sum(1 for a in rec.actions if a.done)
            print(f"recover --apply: {done} repairs in {took * 1000:.0f} ms, failed={rec.failed}")
        finally:
            child.kill()
            child.wait()

        disks = []
        for i in range(32):
            p = images / f"disk{i}.img"
            p.write_bytes(b"x")
            disks.append(
                f"<disk type='file' device='disk'><source file='{p}'/>"
                f"<target dev='vd{chr(97 + i % 26)}{i}'/></disk>"
            )
        xml = (
            "<domain type='kvm'><name>bench</name><memory>65536</memory>"
            f"<devices>{''.join(disks)}</devices></domain>"
        )
        live = SecurityManager(cfg).label_domain(parse_domain(xml))
        t = time.perf_counter()
        oracle = PolicyOracle()
        findings = preflight_check(cfg, live, oracle, domains=[])
        cold = time.perf_counter() - t
        t = time.perf_counter()
        preflight_check(cfg, live, oracle, domains=[])
        warm = time.perf_counter() - t
        print(
            f"pre-flight, 32 disks: cold (policy load) {cold * 1000:.1f} ms, warm "
            f"{warm * 1000:.1f} ms, {len(findings)} findings"
        )
        SecurityManager(cfg).restore_domain("bench")


if __name__ == "__main__":
    main()
