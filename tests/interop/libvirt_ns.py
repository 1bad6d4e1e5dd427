"""The real libvirt 9.0 in a private mount namespace, for the interop suite (issue 12).

``unshare -m`` starts a holder process (``sleep infinity``) whose mount namespace has
its own tmpfs on ``/run`` (so ``/run/libvirt`` and libvirt's status XML exist only
there), its own ``/etc/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt`` and
``/var/log/libvirt`` (bound from a temporary directory) and its own ``/dev`` without
``/dev/kvm`` (libvirt probes QEMU's capabilities as root but checks ``/dev/kvm`` as
the QEMU user; with the root-only ``/dev/kvm`` of our machines it would re-probe,
40 s, before every start). ``virtlogd``, ``libvirtd``, ``virsh`` and ``svirt`` are
entered into it with ``nsenter``; nothing outside the namespace sees them. Every
process is stopped by its pid; the namespace disappears with the holder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SVIRT = str(Path(sys.executable).with_name("svirt"))
LIBVIRT_QEMU_USER = "libvirt-qemu"

_HOLDER = r"""
set -e
R="$1"
mount --make-rprivate /
umount -R -l /dev
mount -t tmpfs -o mode=0755,size=1m svirt-interop-dev /dev
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r name major minor <<EOF
$n
EOF
  mknod -m 0666 "/dev/$name" c "$major" "$minor"
done
mkdir /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 svirt-interop-pts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 svirt-interop-shm /dev/shm
ln -s /proc/self/fd /dev/fd
mount -t tmpfs -o mode=0755 svirt-interop-run /run
mkdir -p /run/lock /run/libvirt
mount --bind "$R/etc" /etc/libvirt
mount --bind "$R/lib" /var/lib/libvirt
mount --bind "$R/cache" /var/cache/libvirt
mount --bind "$R/log" /var/log/libvirt
echo ready
exec sleep infinity
"""

QEMU_CONF = """\
user = "{user}"
group = "{user}"
dynamic_ownership = 1
remember_owner = 1
cgroup_controllers = [ ]
"""


class LibvirtError(RuntimeError):
    pass


class LibvirtNamespace:
    """One private namespace with virtlogd and libvirtd; see the module docstring."""

    def __init__(self, qemu_user: str = LIBVIRT_QEMU_USER) -> None:
        self.qemu_user = qemu_user
        self.root = Path(tempfile.mkdtemp(prefix="svirt-interop-", dir="/var/tmp"))
        self.root.chmod(0o755)
        for d in ("etc", "lib", "cache", "log", "images"):
            (self.root / d).mkdir(mode=0o755)
        (self.root / "etc/libvirtd.conf").write_text('log_outputs = "3:stderr"\n')
        (self.root / "etc/virtlogd.conf").write_text('log_outputs = "3:stderr"\n')
        (self.root / "etc/qemu.conf").write_text(QEMU_CONF.format(user=qemu_user))
        self.images = self.root / "images"
        self.holder: subprocess.Popen[str] | None = None
        self.virtlogd: subprocess.Popen[bytes] | None = None
        self.libvirtd: subprocess.Popen[bytes] | None = None
        self.libvirtd_starts: list[float] = []  # seconds each start took to answer

    # --- the namespace -----------------------------------------------------------------

    def open(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "-m", "bash", "-c", _HOLDER, "holder", str(self.root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line != "ready\n":
            err = self.holder.stderr.read() if self.holder.stderr else ""
            self.holder.kill()
            self.holder.wait()
            raise LibvirtError(f"cannot set up the namespace: {line!r} {err}")

    def enter(self, argv: list[str]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv]

    def inside(self, path: str) -> Path:
        """A path of the namespace, as seen from outside it (read-only use)."""
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/root{path}")

    @property
    def run_dir(self) -> Path:
        """libvirt's status XML directory, seen from outside the namespace."""
        return self.inside("/run/libvirt/qemu")

    # --- the daemons -------------------------------------------------------------------

    def start_daemons(self, timeout: float = 90.0) -> float:
        log = open(self.root / "daemons.log", "ab")  # noqa: SIM115 - kept for the children
        if self.virtlogd is None or self.virtlogd.poll() is not None:
            self.virtlogd = subprocess.Popen(
                self.enter(["/usr/sbin/virtlogd"]), stdout=log, stderr=log
            )
        t0 = time.monotonic()
        self.libvirtd = subprocess.Popen(self.enter(["/usr/sbin/libvirtd"]), stdout=log, stderr=log)
        log.close()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.libvirtd.poll() is not None:
                raise LibvirtError(f"libvirtd exited with {self.libvirtd.returncode}")
            if self.virsh("version", check=False).returncode == 0:
                took = time.monotonic() - t0
                self.libvirtd_starts.append(took)
                return took
            time.sleep(0.2)
        raise LibvirtError("libvirtd did not answer in time")

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self.enter(["virsh", "-q", "-c", "qemu:///system", *args]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and res.returncode != 0:
            raise LibvirtError(f"virsh {' '.join(args)}: {res.stderr.strip()}")
        return res

    def svirt(self, *args: str) -> subprocess.CompletedProcess[str]:
        """svirt run inside the namespace (it then sees libvirt's /run/libvirt)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return subprocess.run(
            self.enter([SVIRT, *args]), capture_output=True, text=True, timeout=120, env=env
        )

    def qemu_pids(self) -> dict[str, int]:
        """libvirt's running domains and their QEMU pids, from its status XML."""
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for p in self.run_dir.glob("*.xml"):
                m = re.search(r"<domstatus [^>]*pid='(\d+)'", p.read_text())
                if m:
                    out[p.stem] = int(m.group(1))
        return out

    def kill_libvirt(self) -> dict[str, int]:
        """libvirtd and its QEMUs killed with SIGKILL (a crash): the status XML stays."""
        pids = self.qemu_pids()
        if self.libvirtd is not None:
            self.libvirtd.kill()
            self.libvirtd.wait()
        for pid in pids.values():
            _kill_wait(pid)
        return pids

    def destroy_all(self) -> None:
        if self.libvirtd is not None and self.libvirtd.poll() is None:
            for name in self.qemu_pids():
                self.virsh("destroy", name, check=False)

    def close(self) -> None:
        with contextlib.suppress(LibvirtError, subprocess.SubprocessError, OSError):
            self.destroy_all()
        leftover = self.qemu_pids() if self.holder is not None else {}
        for proc in (self.libvirtd, self.virtlogd):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for pid in leftover.values():
            _kill_wait(pid)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_wait(pid: int) -> None:
    """SIGKILL a process this suite started (a QEMU of its libvirtd) and wait until the
    pid is gone; the QEMU is not our child, so wait by polling."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(500):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.01)


class Svirt:
    """svirt configured for one test, run inside libvirt's namespace."""

    def __init__(self, ns: LibvirtNamespace, root: Path, user: str) -> None:
        self.ns = ns
        self.root = root
        self.user = user
        self.state_dir = root / "state"
        self.conf = root / "svirt.conf"
        self.conf.write_text(
            'security_driver = ["selinux"]\n'
            f'state_dir = "{self.state_dir}"\n'
            f'user = "{user}"\ngroup = "{user}"\n'
            f'images_dirs = ["{root / "images"}"]\n'
            # the one QEMU identity per host that libvirt uses (svirt's own user or
            # libvirt's); the per-VM identity is tested in tests/adversarial
            'vm_identity = "off"\n'
        )
        self.started: list[str] = []

    def __call__(self, *args: str) -> tuple[int, str, str]:
        res = self.ns.svirt(args[0], "--config", str(self.conf), *args[1:])
        return res.returncode, res.stdout, res.stderr

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, f"svirt {' '.join(args)} failed ({code}): {err}{out}"
        return out + err

    def start(self, xml: Path) -> str:
        out = self.ok("start", str(xml))
        self.started.append(xml.stem)
        return out
