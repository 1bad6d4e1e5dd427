"""``svirt demo``: the guided tour, on files and VMs it creates and removes again.

Two small VMs and one shared image under a demo directory: start both under sVirt, show
their labels (``svirt list -Z``, ``svirt ls -Z``), the private ``/dev`` of one, ask the
policy whether they are isolated (``svirt verify``), explain the seed's denial (``svirt
audit explain``), stop both and show that every label and owner is back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from svirt import Domain, Host, LaunchError

__all__ = ["register"]

_VM = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <seclabel type='dynamic' model='selinux'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{dir}/{name}.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{dir}/shared.img'/>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
  </devices>
</domain>
"""

# The denial printed in seed 000 (a static label with relabel='no' on an image that
# kept virt_image_t).
_SEED_AVC = (
    "type=AVC msg=audit(1764924581.131:15655): avc:  denied  { write } for  pid=467192 "
    'comm="qemu-kvm" name="ol810.qcow2" dev="dm-0" ino=168652224 '
    "scontext=system_u:system_r:svirt_t:s0:c392,c662 "
    "tcontext=system_u:object_r:virt_image_t:s0 tclass=file permissive=0\n"
)


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the guided tour: two confined VMs, their labels, verify, a denial explained",
    )
    p.add_argument("--keep", action="store_true", help="keep the demo directory")
    p.set_defaults(func=run)


def _step(title: str) -> None:
    print(f"\n=== {title}")


def _svirt(conf: Path, *args: str) -> int:
    from svirt.cli.main import main

    print("$ svirt " + " ".join(args))
    return main(["--config", str(conf), *args])


def _image(path: Path, fmt: str, owner: int) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "16M"], check=True)
    os.chown(path, owner, owner)
    os.chmod(path, 0o600)
    os.setxattr(path, "security.selinux", b"system_u:object_r:virt_image_t:s0\0")


def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="svirt-demo-", dir="/var/tmp"))
    base.chmod(0o755)  # QEMU runs as svirt-qemu and must reach the images
    conf = base / "svirt.conf"
    conf.write_text(
        "# The SELinux driver named explicitly: labels are written even where SELinux is off.\n"
        f'security_driver = ["selinux"]\nstate_dir = "{base}/state"\n'
    )
    host = Host(conf)
    started: list[str] = []
    try:
        _step("Images: two private qcow2 disks and one shared raw disk, owned by users 1001/1002")
        _image(base / "vm1.qcow2", "qcow2", 1001)
        _image(base / "vm2.qcow2", "qcow2", 1002)
        _image(base / "shared.img", "raw", 0)
        for name in ("vm1", "vm2"):
            (base / f"{name}.xml").write_text(_VM.format(name=name, dir=base))
        print(textwrap.indent((base / "vm1.xml").read_text(), "    "))
        images = [str(base / n) for n in ("vm1.qcow2", "vm2.qcow2", "shared.img")]
        _svirt(conf, "ls", "-Z", *images)

        _step("Start both VMs: a unique category pair each, QEMU as svirt-qemu, private /dev")
        for name in ("vm1", "vm2"):
            if _svirt(conf, "start", str(base / f"{name}.xml")) != 0:
                return 1
            started.append(name)
        _svirt(conf, "list", "-Z")
        print("\nEach private image carries its VM's categories; the shareable one has none.")
        print("The originals are remembered in libvirt's trusted.libvirt.security.* xattrs:")
        _svirt(conf, "ls", "-Z", *images)

        try:
            pid = host.domain("vm1").pid
        except LaunchError:
            pid = None
        if pid is not None:
            _step(f"The private /dev of vm1 (QEMU pid {pid}): only the default devices")
            print(f"$ ls /proc/{pid}/root/dev")
            print("    " + "  ".join(sorted(os.listdir(f"/proc/{pid}/root/dev"))))
            st = os.stat(f"/proc/{pid}")
            print(
                f"QEMU runs as uid {st.st_uid} in mount namespace "
                f"{os.readlink(f'/proc/{pid}/ns/mnt')} "
                f"(svirt: {os.readlink('/proc/self/ns/mnt')})"
            )

        _step("Ask the real policy: can either VM reach the other's disk?")
        _svirt(conf, "verify")

        _step("Why was a VM denied? The denial from the seed, explained")
        log = base / "audit.log"
        log.write_text(_SEED_AVC)
        _svirt(conf, "audit", "explain", "-if", str(log))

        _step("Stop both: every label and owner comes back, the MCS pairs are released")
        for name in list(started):
            _svirt(conf, "stop", name, "--force")
            started.remove(name)
        _svirt(conf, "ls", "-Z", *images)
        _svirt(conf, "list")
        print(
            "\nThe shareable image keeps svirt_image_t:s0 (never restored, as libvirt: "
            "another VM may still use it)."
        )
    finally:
        if started:
            for name in started:
                Domain(host, name).stop(force=True)
        if args.keep:
            print(f"\n(kept {base})")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0
