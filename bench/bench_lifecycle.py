"""Start-to-QMP-ready and stop-to-restored latency of ``svirt start/stop`` (issue 5),
side by side with bare QEMU started with the same command line (the floor), and with
libvirt's ``virsh start``/``virsh destroy`` where libvirt is installed and running.

For 1 and 16 disks, ``--rounds`` interleaved rounds each:

- svirt:  ``start_domain`` returns when QMP answered (labels set, private /dev, QEMU as
          svirt-qemu); ``stop_domain(force=True)`` returns when every label and owner is
          restored and the MCS level released;
- bare:   the same argv (``build_command``) spawned as root in our namespace, timed to
          ``query-status``; ``quit`` and reaping timed for the stop;
- libvirt (optional): ``virsh create`` of the same XML to the end of the command, and
  ``virsh destroy``.

Goal (issue 5): ``svirt start`` to QMP ready within 0.3 s for one disk.

    .venv/bin/python bench/bench_lifecycle.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from svirt.conf import config_from_mapping
from svirt.domain import parse_domain
from svirt.launch.lifecycle import start_domain, stop_domain
from svirt.launch.qemu import build_command
from svirt.launch.qmp import QMPClient


def domain_xml(name: str, base: Path, ndisks: int) -> str:
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{base}/{name}-{i}.img'/><target dev='vd{chr(97 + i)}' bus='virtio'/>"
        f"</disk>"
        for i in range(ndisks)
    )
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices>{disks}</devices></domain>"
    )


def make_images(base: Path, name: str, ndisks: int) -> None:
    for i in range(ndisks):
        p = base / f"{name}-{i}.img"
        p.write_bytes(b"")
        os.truncate(p, 1 << 20)
        os.setxattr(p, "security.selinux", b"system_u:object_r:virt_image_t:s0\0")


def bare_round(xml: str, base: Path) -> tuple[float, float]:
    dom = parse_domain(xml)
    sock = base / "bare.qmp"
    cmd = build_command(dom, qmp_socket=sock)
    log = open(base / "bare.log", "ab")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    with QMPClient.connect(sock, timeout=30, pid=proc.pid) as qmp:
        qmp.query_status()
        t1 = time.perf_counter()
        qmp.quit()
    proc.wait()
    t2 = time.perf_counter()
    log.close()
    return t1 - t0, t2 - t1


def svirt_round(cfg_base: Path, xml: str) -> tuple[float, float]:
    cfg = config_from_mapping(
        {"security_driver": ["selinux"], "state_dir": str(cfg_base / "state")}
    )
    dom = parse_domain(xml)
    t0 = time.perf_counter()
    start_domain(cfg, dom)
    t1 = time.perf_counter()
    stop_domain(cfg, dom.name, force=True)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def virsh_round(xml_path: Path, name: str) -> tuple[float, float] | None:
    if shutil.which("virsh") is None:
        return None
    t0 = time.perf_counter()
    r = subprocess.run(
        ["virsh", "-c", "qemu:///system", "create", str(xml_path)], capture_output=True, check=False
    )
    if r.returncode != 0:
        return None
    t1 = time.perf_counter()
    subprocess.run(
        ["virsh", "-c", "qemu:///system", "destroy", name], capture_output=True, check=False
    )
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="svirt-bench-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        print(f"{'disks':>5} {'side':<8} {'start (ms)':>11} {'stop (ms)':>10}  ratio to bare")
        for ndisks in (1, 16):
            name = f"bench{ndisks}"
            make_images(base, name, ndisks)
            xml = domain_xml(name, base, ndisks)
            (base / f"{name}.xml").write_text(xml)
            times: dict[str, list[tuple[float, float]]] = {"bare": [], "svirt": [], "virsh": []}
            for _ in range(args.rounds):
                times["bare"].append(bare_round(xml, base))
                times["svirt"].append(svirt_round(base, xml))
                v = virsh_round(base / f"{name}.xml", name)
                if v is not None:
                    times["virsh"].append(v)
            bare_start = statistics.median(t[0] for t in times["bare"])
            bare_stop = statistics.median(t[1] for t in times["bare"])
            for side in ("bare", "svirt", "virsh"):
                if not times[side]:
                    print(f"{ndisks:>5} {side:<8} {'(libvirt not running)':>22}")
                    continue
                start = statistics.median(t[0] for t in times[side])
                stop = statistics.median(t[1] for t in times[side])
                print(
                    f"{ndisks:>5} {side:<8} {start * 1e3:>11.1f} {stop * 1e3:>10.1f}  "
                    f"start {start / bare_start:.2f}x, stop {stop / bare_stop:.2f}x"
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
