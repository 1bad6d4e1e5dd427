"""Policy oracle and ``svirt verify`` timings on the installed reference policy.

1. Decisions per second, without and with the decision cache, for each backend and
   two workloads: "mcs" (what verify asks: svirt_t with a category pair against
   svirt_image_t images of other pairs, read and read-write; ALLOW/CONSTRAINT) and
   "te" (types with no allow rule or a boolean: TERULE/BOOLEAN, where audit2why
   tries every boolean). Each workload is a fixed set of distinct questions asked
   several times over, as verify does across domains. "no cache" turns off the
   oracle's decision cache only: the libsepol backend still keeps what its boolean
   search learnt per type pair (each flip there is a policy reload, ~0.1 s, paid in
   the untimed first pass), which is why its "te" rate is close to its "mcs" rate.
2. ``verify`` over 50 running domains (live XML with this process's pid, one image
   each with its own real label), cold (new oracle) and warm (cache filled).

Run as root (labels are security.selinux xattrs): ``.venv/bin/python bench/bench_policy.py``
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from svirt.conf import config_from_mapping
from svirt.host.selinux import setfilecon
from svirt.policy import PolicyOracle, available_backends
from svirt.policy.verify import verify

POLICY = Path("/etc/selinux/default/policy/policy.33")
ROUNDS = 5


def mcs_queries() -> list[tuple[str, str, str, tuple[str, ...]]]:
    procs = [f"system_u:system_r:svirt_t:s0:c{i},c{i + 100}" for i in range(20)]
    images = [f"system_u:object_r:svirt_image_t:s0:c{i},c{i + 100}" for i in range(20)]
    rw = ("read", "open", "getattr", "write", "append", "lock", "ioctl")
    return [(p, t, "file", perms) for p in procs for t in images for perms in (rw[:3], rw)]


def te_queries() -> list[tuple[str, str, str, tuple[str, ...]]]:
    types = ["virt_image_t", "user_home_t", "nfs_t", "cifs_t", "tmp_t", "etc_t"]
    procs = [f"system_u:system_r:svirt_t:s0:c{i},c{i + 100}" for i in range(4)]
    return [
        (p, f"system_u:object_r:{t}:s0", c, ("read",))
        for p in procs
        for t in types
        for c in ("file", "blk_file")
    ]


def rate(oracle: PolicyOracle, queries: list[tuple[str, str, str, tuple[str, ...]]]) -> float:
    # One untimed pass: the libsepol backend's one-off costs (parsing the policy,
    # per-type-pair boolean search) and the cache's first fill are not what is measured.
    for q in queries:
        oracle.decide(*q)
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for q in queries:
            oracle.decide(*q)
    return ROUNDS * len(queries) / (time.perf_counter() - start)


def bench_decisions() -> None:
    print("decisions per second (installed policy, distinct questions asked repeatedly)")
    header = ("backend", "workload", "questions", "no cache/s", "cache/s", "ratio")
    print("{:<10} {:<8} {:>9} {:>12} {:>12} {:>8}".format(*header))
    for backend in available_backends():
        for name, queries in (("mcs", mcs_queries()), ("te", te_queries())):
            cold = rate(PolicyOracle(POLICY, backend=backend, cache_size=0), queries)
            warm = rate(PolicyOracle(POLICY, backend=backend), queries)
            print(
                f"{backend:<10} {name:<8} {len(queries):>9} {cold:>12,.0f} {warm:>12,.0f} "
                f"{warm / cold:>7.0f}x"
            )


def bench_verify(n: int = 50) -> None:
    with tempfile.TemporaryDirectory(prefix="svirt-bench-") as tmp:
        root = Path(tmp)
        domains = root / "state" / "domains"
        domains.mkdir(parents=True)
        images = root / "images"
        images.mkdir()
        for i in range(n):
            cats = f"c{i},c{i + 512}"
            image = images / f"vm{i}.qcow2"
            image.write_bytes(b"")
            setfilecon(image, f"system_u:object_r:svirt_image_t:s0:{cats}")
            (domains / f"vm{i}.xml").write_text(
                f"<domstatus state='running' pid='{os.getpid()}'>"
                f"<domain type='kvm' id='{i + 1}'><name>vm{i}</name>"
                "<seclabel type='dynamic' model='selinux' relabel='yes'>"
                f"<label>system_u:system_r:svirt_t:s0:{cats}</label>"
                f"<imagelabel>system_u:object_r:svirt_image_t:s0:{cats}</imagelabel>"
                "</seclabel><devices><disk type='file' device='disk'>"
                f"<source file='{image}'/><target dev='vda' bus='virtio'/></disk>"
                "</devices></domain></domstatus>"
            )
        cfg = config_from_mapping(
            {"state_dir": str(root / "state"), "libvirt_run_dir": str(root / "none")}
        )
        print(f"\nverify, {n} running domains, 1 image each")
        print(f"{'backend':<10} {'cold':>10} {'warm':>10} {'decisions':>10}  isolated")
        for backend in available_backends():
            oracle = PolicyOracle(POLICY, backend=backend)
            start = time.perf_counter()
            report = verify(cfg, oracle)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            verify(cfg, oracle)
            warm = time.perf_counter() - start
            print(
                f"{backend:<10} {cold * 1000:>8.0f}ms {warm * 1000:>8.0f}ms "
                f"{report.decisions:>10}  {report.isolated}"
            )


def main() -> int:
    if os.geteuid() != 0:
        print("bench_policy: run as root (labels are security.selinux xattrs)", file=sys.stderr)
        return 1
    bench_decisions()
    bench_verify()
    return 0


if __name__ == "__main__":
    sys.exit(main())
