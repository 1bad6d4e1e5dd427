"""Doctor and recover inside a real VM's mount namespace (seed 000: "stale xattrs still
present on the device within the mount namespace of the vm"). A guest-less TCG QEMU is
started through svirt's lifecycle; nodes are made and xattrs written in its private
/dev through /proc/PID/root, as libvirt's namespace transactions leave them."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import config, image_dir, make_file, state, svirt_xattrs
from svirt.conf import Config
from svirt.doctor import Kind, RepairKind, examine, recover
from svirt.domain import parse_domain
from svirt.host.namespace import mount_namespace_id
from svirt.launch.lifecycle import start_domain, stop_domain
from svirt.security.remember import boot_time
from svirt.state.domains import DomainStore

pytestmark = pytest.mark.qemu
LV = "trusted.libvirt.security."
FIXED_DISK = "system_u:object_r:fixed_disk_device_t:s0"


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    with image_dir("svirt-doctor-") as d:
        yield d


@pytest.fixture
def cfg(vm_dir: Path) -> Config:
    return config(vm_dir, images_dirs=[], libvirt_run_dir=str(vm_dir / "libvirt"))


@pytest.fixture
def loop_device(vm_dir: Path) -> Iterator[str]:
    backing = vm_dir / "loop.img"
    backing.write_bytes(b"\0" * (1 << 20))
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=True)


def vm_xml(name: str, disks: str) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>{disks}</devices>"
        "</domain>"
    )


def raw_disk(path: Path | str, target: str, kind: str = "file") -> str:
    attr = "file" if kind == "file" else "dev"
    return (
        f"<disk type='{kind}' device='disk'><driver name='qemu' type='raw'/>"
        f"<source {attr}='{path}'/><target dev='{target}' bus='virtio'/></disk>"
    )


def libvirt_node_xattrs(path: str, vm_label: str, ref: str = "1") -> None:
    """What libvirt's transaction in the VM namespace writes on a /dev copy (seed 000)."""
    os.setxattr(path, "security.selinux", vm_label.encode() + b"\0")
    ts = str(boot_time())
    for name, value in (
        ("dac", "+0:+6"),
        ("ref_dac", ref),
        ("ref_selinux", ref),
        ("selinux", FIXED_DISK),
        ("timestamp_dac", ts),
        ("timestamp_selinux", ts),
    ):
        os.setxattr(path, LV + name, value.encode())
    os.chown(path, 107, 107)


def stop_all(cfg: Config) -> None:
    for rec in list(DomainStore(cfg.state_dir).records()):
        stop_domain(cfg, rec.domain.name, force=True)


def test_stale_copy_in_the_vm_namespace(cfg: Config, vm_dir: Path) -> None:
    img = make_file(vm_dir / "vm.img")
    os.truncate(img, 1 << 20)
    try:
        res = start_domain(cfg, parse_domain(vm_xml("nsvm", raw_disk(img, "vda"))))
        assert mount_namespace_id(res.pid) != mount_namespace_id()
        assert res.imagelabel is not None
        # An interrupted detach of /dev/sde (seed 000): the node stays in the VM's /dev
        # with libvirt's xattrs, this boot, refcount 1; the host never had the node.
        node = f"/proc/{res.pid}/root/dev/sde"
        os.mknod(node, 0o660 | stat.S_IFBLK, os.makedev(8, 64))
        libvirt_node_xattrs(node, res.imagelabel)
        assert not os.path.exists("/dev/sde") or svirt_xattrs("/dev/sde") == []

        report = examine(cfg)
        ns = [f for f in report.findings if f.path == node]
        assert {(f.kind, f.family) for f in ns} == {
            (Kind.NAMESPACE_COPY, "selinux"),
            (Kind.NAMESPACE_COPY, "dac"),
        }
        sel = next(f for f in ns if f.family == "selinux")
        assert f"the copy in the private /dev of pid {res.pid}" in sel.evidence
        assert "refcount 1 but nothing uses the file" in sel.evidence
        assert sel.fix == f"svirt recover --apply {node}"
        assert sel.repair is RepairKind.RESTORE
        # The VM's own disk is fine: listed by the running domain and held by its QEMU.
        [facts] = [f for f in report.files if f.path == str(img)]
        assert res.pid in {h.pid for h in facts.holders}
        assert [f for f in report.findings if f.path == str(img)] == []
        # Asking about the host path finds the namespace copy too.
        assert node in {f.path for f in examine(cfg, ["/dev/sde"]).findings}
        # So does asking about the domain by name.
        assert node in {f.path for f in examine(cfg, ["nsvm"]).findings}

        before_img = state(img)
        done = recover(cfg, apply=True)
        assert [a.error for a in done.actions] == [None, None]
        assert os.getxattr(node, "security.selinux").rstrip(b"\0").decode() == FIXED_DISK
        assert (os.stat(node).st_uid, os.stat(node).st_gid) == (0, 6)
        assert svirt_xattrs(node) == []
        assert state(img) == before_img  # the running VM's disk was not touched
        assert examine(cfg).findings == ()
    finally:
        stop_all(cfg)


def test_refcount_of_a_used_namespace_node_is_fixed(
    cfg: Config, vm_dir: Path, loop_device: str
) -> None:
    try:
        res = start_domain(
            cfg, parse_domain(vm_xml("blkvm", raw_disk(loop_device, "vda", "block")))
        )
        assert res.imagelabel is not None
        node = f"/proc/{res.pid}/root{loop_device}"
        assert os.path.exists(node)
        # libvirt-style state on the namespace copy, counting one user too many.
        libvirt_node_xattrs(node, res.imagelabel, ref="2")
        [facts] = [f for f in examine(cfg, [node]).files]
        assert facts.namespace_pid == res.pid
        assert [(d.name, d.pid) for d in facts.domains] == [("blkvm", res.pid)]
        assert res.pid in {h.pid for h in facts.holders}  # QEMU has it open
        assert facts.users() == 1
        found = [f for f in examine(cfg, [node]).findings]
        assert {(f.kind, f.repair) for f in found} == {(Kind.REFCOUNT, RepairKind.REFCOUNT)}

        recover(cfg, [node], apply=True)
        assert os.getxattr(node, LV + "ref_selinux") == b"1"
        assert os.getxattr(node, LV + "selinux") == FIXED_DISK.encode()  # kept: in use
        assert os.getxattr(node, "security.selinux").rstrip(b"\0").decode() == res.imagelabel
        assert examine(cfg, [node]).findings == ()
    finally:
        stop_all(cfg)
