"""DAC by chown against DAC by ACL (issue 4): label + restore of a domain with 32 disks.

Both runs use the same SecurityManager path (pins, metadata locks, journal) with only the
DAC driver stacked (``security_driver = ["none"]``), so the difference is the mode: a
chown plus libvirt's ``*_dac`` xattrs, against a named-user ACL entry plus svirt's
refcount xattr (and the search entry on the images' directory). Images are owned by
another user with mode 0600, so both modes must change something. State and images live
on tmpfs (/dev/shm). The two modes are measured in alternation; medians are printed,
with the ratio ACL / chown.

    .venv/bin/python bench/bench_dac_modes.py [--disks 32] [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from svirt.conf import config_from_mapping
from svirt.domain import parse_domain
from svirt.security.manager import SecurityManager


def domain_xml(name: str, images: list[Path]) -> str:
    disks = "".join(
        f"<disk type='file'><source file='{p}'/><target dev='vd{i:03d}'/></disk>"
        for i, p in enumerate(images)
    )
    return f"<domain type='kvm'><name>{name}</name><devices>{disks}</devices></domain>"


def one_round(mgr: SecurityManager, xml: str) -> float:
    dom = parse_domain(xml)
    t0 = time.perf_counter()
    mgr.label_domain(dom)
    mgr.restore_domain(dom.name)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--disks", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="svirt-dac-", dir="/dev/shm"))
    try:
        imgdir = base / "images"
        imgdir.mkdir(mode=0o700)
        images = []
        for i in range(args.disks):
            p = imgdir / f"d{i}.img"
            p.write_bytes(b"x")
            os.chown(p, 4000, 4000)
            os.chmod(p, 0o600)
            images.append(p)
        xml = domain_xml("dacbench", images)
        managers = {
            mode: SecurityManager(
                config_from_mapping(
                    {
                        "security_driver": ["none"],
                        "state_dir": str(base / f"state-{mode}"),
                        "dac_mode": mode,
                    }
                )
            )
            for mode in ("chown", "acl")
        }
        times: dict[str, list[float]] = {"chown": [], "acl": []}
        for mode, mgr in managers.items():
            one_round(mgr, xml)  # warm-up, and proof that the round trip works
            times[mode].clear()
        for _ in range(args.rounds):
            for mode, mgr in managers.items():
                times[mode].append(one_round(mgr, xml))
        chown = statistics.median(times["chown"])
        acl = statistics.median(times["acl"])
        print(f"label + restore, {args.disks} disks, DAC only, median of {args.rounds} rounds")
        print(f"  chown mode: {chown * 1e3:7.2f} ms")
        print(f"  ACL mode:   {acl * 1e3:7.2f} ms")
        print(f"  ratio ACL / chown: {acl / chown:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
