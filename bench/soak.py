"""Soak (issue 11): N random operations with SIGKILLs at random points, then the invariant
check: every file exactly as before (owner, mode, every xattr, ``getfacl``), and nothing
left (no domain row or view, no MCS or identity reservation, no open journal entry, no
QEMU or monitor, no mount of ours).

Operations, drawn at random over a few domain names and a pool of disks of several kinds
(raw, qcow2 over a backing file, read-only, shareable, a disk in a sub-directory):
start, stop (QMP or forced), SIGKILL of a VM's QEMU, SIGKILL of its monitor, SIGKILL of
a ``svirt start``'s monitor a random few milliseconds in, ``svirt label`` and
``svirt restore`` (in a child, some SIGKILLed at a random moment), hotplug and unplug,
and the reconciling ``svirt list``. Shared media start with the labels (and, for the
shareable disk, the owner) svirt gives them: libvirt never restores a shared medium's
SELinux label, nor its owner in chown mode; "as before" means that.

    .venv/bin/python bench/soak.py [--ops 1000] [--seed N] [--vm-identity auto|on|off]

Prints the number of operations, kills, differences and the run time; exit 1 when any
difference is found.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from svirt.conf import Config, config_from_mapping
from svirt.domain import parse_disk, parse_domain
from svirt.errors import SvirtError
from svirt.launch.lifecycle import (
    attach_disk,
    detach_disk,
    reconcile,
    start_domain,
    stop_domain,
)
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore

IMAGE = "system_u:object_r:virt_image_t:s0"
SHARED = "system_u:object_r:svirt_image_t:s0"
CONTENT = "system_u:object_r:virt_content_t:s0"
NAMES = ("s1", "s2", "s3", "s4", "s,5")
SVIRT = [sys.executable, "-c", "from svirt.cli.main import entry; entry()"]


def getfacl(path: Path) -> str:
    return subprocess.run(
        ["getfacl", "-p", "-n", str(path)], capture_output=True, text=True, check=True
    ).stdout


def file_state(path: Path) -> tuple[object, ...]:
    st = os.stat(path)
    xattrs = tuple(sorted((n, os.getxattr(path, n)) for n in os.listxattr(path)))
    return st.st_uid, st.st_gid, st.st_mode, xattrs, getfacl(path)


class Pool:
    """The disks: (path, kind) with kind raw | qcow2 | ro | share."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.disks: list[tuple[Path, str]] = []
        sub = base / "sub"
        sub.mkdir(mode=0o755)
        for i in range(8):
            p = (sub if i % 4 == 3 else base) / f"raw{i}.img"
            self._make(p, 1000 + i, 0o600, IMAGE)
            self.disks.append((p, "raw"))
        for i in range(3):
            backing = base / f"base{i}.qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(backing), "1M"], check=True
            )
            self._own(backing, 0, 0o644, CONTENT)
            top = base / f"top{i}.qcow2"
            subprocess.run(
                [
                    "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(backing), str(top),
                ],
                check=True,
            )  # fmt: skip
            self._own(top, 2000 + i, 0o600, IMAGE)
            self.disks.append((top, "qcow2"))
        iso = base / "cd.iso"
        self._make(iso, 0, 0o644, CONTENT)
        self.disks.append((iso, "ro"))
        share = base / "shared.img"
        # Owned by the shared QEMU user already: with vm_identity off, chown mode gives
        # shared media to it and never takes them back (libvirt's rule, as the label).
        qemu = pwd.getpwnam("svirt-qemu")
        self._make(share, qemu.pw_uid, 0o660, SHARED, gid=qemu.pw_gid)
        self.disks.append((share, "share"))
        self.files = sorted({p for p, _ in self.disks} | set(base.glob("base*.qcow2")))
        self.dirs = [base, sub]

    @staticmethod
    def _own(p: Path, uid: int, mode: int, label: str, gid: int | None = None) -> None:
        os.chown(p, uid, uid if gid is None else gid)
        os.chmod(p, mode)
        os.setxattr(p, "security.selinux", label.encode() + b"\0")

    def _make(self, p: Path, uid: int, mode: int, label: str, gid: int | None = None) -> None:
        with open(p, "wb") as fh:
            fh.truncate(1 << 20)
        self._own(p, uid, mode, label, gid)

    def disk_xml(self, path: Path, kind: str, target: str) -> str:
        fmt = "qcow2" if kind == "qcow2" else "raw"
        flags = {"ro": "<readonly/>", "share": "<shareable/>"}.get(kind, "")
        return (
            f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
            f"<source file='{path}'/><target dev='{target}' bus='virtio'/>{flags}</disk>"
        )

    def domain_xml(self, rng: random.Random, name: str) -> str:
        chosen = rng.sample(self.disks, rng.randint(1, 3))
        disks = "".join(self.disk_xml(p, k, f"vd{chr(97 + i)}") for i, (p, k) in enumerate(chosen))
        esc = name.replace("&", "&amp;")
        return (
            f"<domain type='qemu'><name>{esc}</name><memory unit='MiB'>32</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
            f"<devices>{disks}</devices></domain>"
        )


class Soak:
    def __init__(self, base: Path, cfg: Config, conf_file: Path, rng: random.Random) -> None:
        self.base = base
        self.cfg = cfg
        self.conf = conf_file
        self.rng = rng
        self.pool = Pool(base)
        self.kills = 0
        self.refused = 0
        self.pids: set[int] = set()  # every QEMU and monitor seen (checked gone at the end)

    def store(self) -> DomainStore:
        return DomainStore(self.cfg.state_dir)

    def _record(self, name: str) -> tuple[int | None, int | None]:
        try:
            rec = self.store().read(name)
        except SvirtError:
            return None, None
        if rec is None:
            return None, None
        return rec.pid, rec.owner

    def _kill(self, pid: int | None) -> None:
        if pid is None or pid <= 0:
            return
        # Only processes of this soak: a QEMU or monitor recorded in our state dir.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.kills += 1

    def _child(self, args: list[str], kill_after: float | None) -> None:
        proc = subprocess.Popen(
            [*SVIRT, *args, "--config", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kill_after is not None:
            try:
                proc.wait(kill_after)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.kills += 1
        proc.wait()

    def step(self) -> str:
        rng = self.rng
        name = rng.choice(NAMES)
        op = rng.choices(
            [
                "start",
                "stop",
                "kill-qemu",
                "kill-monitor",
                "start-killed",
                "label",
                "restore",
                "hotplug",
                "list",
            ],
            weights=[24, 14, 8, 6, 8, 12, 10, 10, 8],
        )[0]
        xml_file = self.base / f"{op}-{abs(hash(name))}.xml"
        try:
            if op == "start":
                res = start_domain(self.cfg, parse_domain(self.pool.domain_xml(rng, name)))
                self.pids.add(res.pid)
                self.pids.update(p for p in self._record(name) if p is not None)
            elif op == "stop":
                stop_domain(self.cfg, name, force=rng.random() < 0.5, timeout=1.0)
            elif op == "kill-qemu":
                self._kill(self._record(name)[0])
            elif op == "kill-monitor":
                self._kill(self._record(name)[1])
            elif op == "start-killed":
                xml_file.write_text(self.pool.domain_xml(rng, name))
                proc = subprocess.Popen(
                    [*SVIRT, "start", str(xml_file), "--config", str(self.conf)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(rng.uniform(0.0, 0.25))
                pid, owner = self._record(name)
                self.pids.update(p for p in (pid, owner) if p is not None)
                self._kill(rng.choice([owner, pid]))
                proc.wait()
            elif op == "label":
                xml_file.write_text(self.pool.domain_xml(rng, name))
                kill = rng.uniform(0.05, 0.6) if rng.random() < 0.5 else None
                self._child(["label", str(xml_file)], kill)
            elif op == "restore":
                xml_file.write_text(self.pool.domain_xml(rng, name))
                kill = rng.uniform(0.05, 0.6) if rng.random() < 0.3 else None
                self._child(["restore", str(xml_file)], kill)
            elif op == "hotplug":
                rec = self.store().read(name)
                if rec is not None and rec.state == "running":
                    extra = [d for d in rec.domain.disks if d.target == "vdz"]
                    if extra:
                        detach_disk(self.cfg, name, "vdz")
                    else:
                        path, kind = rng.choice(self.pool.disks)
                        attach_disk(
                            self.cfg, name, parse_disk(self.pool.disk_xml(path, kind, "vdz"))
                        )
            elif op == "list":
                reconcile(self.cfg)
        except SvirtError:
            self.refused += 1  # a refusal is fine; what it leaves behind is checked
        finally:
            with contextlib.suppress(FileNotFoundError):
                xml_file.unlink()
        return op

    def wind_down(self) -> None:
        """Stop and restore everything, the way an administrator would."""
        for _ in range(3):
            reconcile(self.cfg)
            for rec in list(self.store().records()):
                name = rec.domain.name
                try:
                    if rec.state in ("labelled", "restore-failed", "labelling"):
                        SecurityManager(self.cfg).restore_domain(name)
                    else:
                        stop_domain(self.cfg, name, force=True, timeout=1.0)
                except SvirtError as exc:
                    print(f"  wind-down {name}: {exc}", file=sys.stderr)
            subprocess.run(
                [*SVIRT, "recover", "--apply", "--config", str(self.conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )

    def leftovers(self) -> list[str]:
        out: list[str] = []
        db = sqlite3.connect(self.cfg.state_dir / "svirt.db")
        try:
            for table in ("domains", "mcs_reservations", "journal_tx", "vm_identities"):
                with contextlib.suppress(sqlite3.OperationalError):
                    n = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    if table == "mcs_reservations":
                        n = db.execute(
                            "SELECT COUNT(*) FROM mcs_reservations "
                            "WHERE domain NOT LIKE 'libvirt:%'"
                        ).fetchone()[0]
                    if n:
                        out.append(f"{n} row(s) left in {table}")
        finally:
            db.close()
        views = list((self.cfg.state_dir / "domains").glob("*.xml"))
        if views:
            out.append(f"domain views left: {[v.name for v in views]}")
        for pid in sorted(self.pids):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    st = fh.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if st not in ("Z", "X") and str(self.base).encode() in cmd:
                out.append(f"process {pid} still runs")
        with open("/proc/self/mountinfo") as fh:
            if str(self.base) in fh.read():
                out.append("a mount under the soak directory is left")
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--vm-identity", default="auto", choices=("auto", "on", "off"))
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="svirt-soak-", dir="/var/tmp"))
    base.chmod(0o755)
    state_dir = base / "state"
    conf = base / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{state_dir}"\n'
        f'libvirt_run_dir = "{base / "lv"}"\nvm_identity = "{args.vm_identity}"\n'
    )
    cfg = config_from_mapping(
        {
            "security_driver": ["selinux"],
            "state_dir": str(state_dir),
            "libvirt_run_dir": str(base / "lv"),
            "vm_identity": args.vm_identity,
        }
    )
    t0 = time.monotonic()
    soak = Soak(base, cfg, conf, rng)
    before = {p: file_state(p) for p in [*soak.pool.files, *soak.pool.dirs]}
    counts: dict[str, int] = {}
    try:
        for i in range(args.ops):
            op = soak.step()
            counts[op] = counts.get(op, 0) + 1
            if (i + 1) % 100 == 0:
                print(f"  {i + 1} operations, {soak.kills} kills", flush=True)
        soak.wind_down()
        diffs = [str(p) for p, st in before.items() if file_state(p) != st]
        left = soak.leftovers()
    finally:
        elapsed = time.monotonic() - t0
    print(f"seed {seed}, vm_identity {args.vm_identity}")
    print(f"operations: {args.ops} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    print(f"SIGKILLs: {soak.kills}; refusals: {soak.refused}")
    print(f"differences: {len(diffs)} file(s), {len(left)} leftover(s)")
    for d in diffs:
        print(f"  changed: {d}")
    for item in left:
        print(f"  left: {item}")
    print(f"run time: {elapsed:.1f} s")
    if not diffs and not left:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"kept {base} for inspection")
    return 1 if diffs or left else 0


if __name__ == "__main__":
    sys.exit(main())
