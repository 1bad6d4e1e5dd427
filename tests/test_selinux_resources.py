"""Resource labelling and restore by the SELinux driver, on real files.

Every file is real (tmp_path on ext4, a ramfs mount, a read-only bind mount, device nodes
made with mknod, FIFOs, bound unix sockets); labels are the real ``security.selinux``
xattr and the remembered state the real ``trusted.libvirt.security.*`` xattrs.

Where the expectations come from:
- libvirt-security-spec §5.1/§5.2 (what each resource gets), §6.2 (what is restored and
  how), §7 (refcounts, staleness, the in-use refusal, soft failures);
- §13.3, libvirt's ``securityselinuxlabeltest`` cases (disks, kernel, chardev, nfs),
  rebuilt here: the domain is live XML carrying ``svirt_image_t:s0:c41,c264``, files
  start unlabelled, and the expected context of each file is libvirt's;
- platform.md, the libvirt defect svirt must not copy.

DAC is switched off (``dynamic_ownership = false``) except where a test says otherwise,
so these tests see the SELinux driver alone. Fakes: sysfs for hostdevs and TPM (this
machine has no IOMMU, USB bus or TPM) and two injected setxattr faults.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import selinux as libselinux

from svirt.conf import Config, config_from_mapping
from svirt.domain import Domain, parse_domain
from svirt.errors import LabelSystemError, OperationInvalid, SecurityError
from svirt.host import devices as host_devices
from svirt.host import selinux as host_selinux
from svirt.security import remember as rem
from svirt.security.driver import Action, LabelOp, Outcome
from svirt.security.manager import SecurityManager

IMG = "system_u:object_r:svirt_image_t:s0:c41,c264"
IMG2 = "system_u:object_r:svirt_image_t:s0:c1,c2"
FILE = "system_u:object_r:svirt_image_t:s0"
CONTENT = "system_u:object_r:virt_content_t:s0"
ORIG = "system_u:object_r:user_tmp_t:s0"
CUSTOM = "system_u:object_r:public_content_t:s0"


# --- helpers ----------------------------------------------------------------------------


def config(tmp_path: Path, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "security_driver": ["selinux"],
        "state_dir": str(tmp_path / "state"),
        "libvirt_run_dir": str(tmp_path / "libvirt-run"),
        "dynamic_ownership": False,
    }
    data.update(extra)
    return config_from_mapping(data, source="<test>")


def live_domain(
    name: str, devices: str = "", os_extra: str = "", level: str = "s0:c41,c264"
) -> Domain:
    """Live XML, as libvirt's label-data tests use: the labels are given, not drawn."""
    return parse_domain(
        f"<domain type='kvm' id='1'><name>{name}</name>"
        f"<os><type>hvm</type>{os_extra}</os>"
        "<seclabel type='dynamic' model='selinux' relabel='yes'>"
        f"<label>system_u:system_r:svirt_t:{level}</label>"
        f"<imagelabel>system_u:object_r:svirt_image_t:{level}</imagelabel>"
        f"</seclabel><devices>{devices}</devices></domain>"
    )


def disk(
    path: Path | str, target: str, extra: str = "", source_extra: str = "", kind: str = "file"
) -> str:
    attr = "dev" if kind == "block" else "file"
    return (
        f"<disk type='{kind}' device='disk'><source {attr}='{path}'>{source_extra}</source>"
        f"<target dev='{target}'/>{extra}</disk>"
    )


def make(path: Path, label: str | None = ORIG) -> Path:
    path.write_bytes(b"data\n")
    if label is not None:
        host_selinux.setfilecon(path, label)
    return path


def label_of(path: Path | str) -> str | None:
    return host_selinux.getfilecon(path)


def lxattrs(path: Path | str) -> dict[str, bytes]:
    """The remembered-label xattrs of a file (both drivers)."""
    return {n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith(rem.XATTR_PREFIX)}


def btime() -> bytes:
    return str(rem.boot_time()).encode()


def remembered(original: str, ref: int = 1) -> dict[str, bytes]:
    return {
        "trusted.libvirt.security.selinux": original.encode(),
        "trusted.libvirt.security.ref_selinux": str(ref).encode(),
        "trusted.libvirt.security.timestamp_selinux": btime(),
    }


def selinux_ops(ops: list[LabelOp]) -> list[tuple[str, str | None, bool]]:
    return [(op.path, op.value, op.remember) for op in ops if op.driver == "selinux"]


@pytest.fixture
def mgr(tmp_path: Path) -> SecurityManager:
    return SecurityManager(config(tmp_path))


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem without xattrs: every label call fails with EOPNOTSUPP, as on
    the NFS mount of libvirt's test."""
    mnt = tmp_path / "nfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def srv_dir() -> Iterator[Path]:
    """A directory whose files have a file-contexts default (/srv → var_t); tmp_path has
    none (``/tmp/.*`` is ``<<none>>``)."""
    d = Path(tempfile.mkdtemp(prefix="svirt-test-", dir="/srv"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


def default_label(path: Path) -> str:
    rc, con = libselinux.matchpathcon(str(path), stat.S_IFREG | 0o600)
    assert rc == 0
    return str(con)


# --- §13.3: libvirt's label-data cases -------------------------------------------------


def test_labeldata_disks(tmp_path: Path, mgr: SecurityManager) -> None:
    files = {n: make(tmp_path / n, label=None) for n in ("d1", "d2", "d3", "d4", "d5")}
    dom = live_domain(
        "disks",
        disk(files["d1"], "vda")
        + disk(files["d2"], "vdb", "<shareable/>")
        + disk(files["d3"], "vdc", "<readonly/>")
        + disk(files["d4"], "vdd", source_extra="<seclabel model='selinux' relabel='no'/>")
        + disk(
            files["d5"],
            "vde",
            source_extra=f"<seclabel model='selinux' relabel='yes'><label>{CUSTOM}</label>"
            "</seclabel>",
        ),
    )
    mgr.label_domain(dom)
    assert {n: label_of(p) for n, p in files.items()} == {
        "d1": IMG,
        "d2": FILE,  # the raw file_context: no user substitution, no categories
        "d3": CONTENT,
        "d4": None,
        "d5": CUSTOM,
    }
    # The files had no label, so nothing was remembered (as in libvirt's test).
    assert all(lxattrs(p) == {} for p in files.values())


def test_labeldata_kernel(tmp_path: Path, mgr: SecurityManager) -> None:
    kernel, initrd = make(tmp_path / "vmlinuz", None), make(tmp_path / "initrd", None)
    mgr.label_domain(
        live_domain("k", os_extra=f"<kernel>{kernel}</kernel><initrd>{initrd}</initrd>")
    )
    assert (label_of(kernel), label_of(initrd)) == (CONTENT, CONTENT)


def bind_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def test_labeldata_chardev(tmp_path: Path, mgr: SecurityManager) -> None:
    log = make(tmp_path / "serial.log", None)
    fifo = tmp_path / "serial.pipe"
    os.mkfifo(fifo)
    dev = tmp_path / "ttyS9"
    os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    socks = [
        bind_socket(tmp_path / n)
        for n in ("plain.sock", "nolabel.sock", "yeslabel.sock", "bind.sock")
    ]
    try:
        mgr.label_domain(
            live_domain(
                "chr",
                f"<serial type='file'><source path='{log}'/><target port='0'/></serial>"
                f"<serial type='pipe'><source path='{fifo}'/><target port='1'/></serial>"
                f"<serial type='dev'><source path='{dev}'/><target port='2'/></serial>"
                f"<serial type='unix'><source mode='connect' path='{tmp_path}/nolabel.sock'>"
                "<seclabel model='selinux' relabel='no'/></source><target port='3'/></serial>"
                f"<serial type='unix'><source mode='connect' path='{tmp_path}/plain.sock'/>"
                "<target port='4'/></serial>"
                f"<serial type='unix'><source mode='connect' path='{tmp_path}/yeslabel.sock'>"
                f"<seclabel model='selinux' relabel='yes'><label>{CUSTOM}</label></seclabel>"
                "</source><target port='5'/></serial>"
                f"<channel type='unix'><source mode='bind' path='{tmp_path}/bind.sock'/>"
                "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
                f"<channel type='unix'><source mode='bind' path='{tmp_path}/absent.sock'/>"
                "<target type='virtio' name='org.example.absent'/></channel>",
            )
        )
    finally:
        for s in socks:
            s.close()
    assert label_of(log) == IMG
    assert label_of(fifo) == IMG  # no .in/.out: the path itself
    assert label_of(dev) == IMG
    assert label_of(tmp_path / "nolabel.sock") is None
    assert label_of(tmp_path / "plain.sock") == IMG
    assert label_of(tmp_path / "yeslabel.sock") == CUSTOM
    assert label_of(tmp_path / "bind.sock") == IMG  # bind mode: labelled because it exists
    assert not (tmp_path / "absent.sock").exists()


def test_labeldata_nfs_soft_failure(
    ramfs: Path, mgr: SecurityManager, caplog: pytest.LogCaptureFixture
) -> None:
    f = make(ramfs / "nfs.img", None)
    with caplog.at_level(logging.INFO, logger="svirt.security.selinux"):
        mgr.label_domain(live_domain("nfs", disk(f, "vda")))  # must succeed
    with pytest.raises(OSError) as info:
        os.getxattr(f, "security.selinux")
    assert info.value.errno == errno.EOPNOTSUPP
    assert f"Setting security context '{IMG}' on '{f}' not supported" in caplog.text
    _, result = mgr.restore_domain("nfs")
    assert result.errors == []


# --- §5.1/§5.2: disks -------------------------------------------------------------------


def test_rw_disk_gets_imagelabel_and_remembers(tmp_path: Path, mgr: SecurityManager) -> None:
    f = make(tmp_path / "a.img")
    mgr.label_domain(live_domain("vm", disk(f, "vda")))
    assert label_of(f) == IMG
    assert lxattrs(f) == remembered(ORIG)
    # The label is written as libselinux writes it: with a trailing NUL.
    assert os.getxattr(f, "security.selinux") == IMG.encode() + b"\0"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("<shareable/>", FILE), ("<readonly/>", CONTENT), ("<readonly/><shareable/>", FILE)],
    ids=["shareable", "readonly", "shareable-beats-readonly"],
)
def test_shared_media_are_not_remembered_and_never_restored(
    srv_dir: Path, mgr: SecurityManager, flags: str, expected: str
) -> None:
    f = make(srv_dir / "media")  # a restore would show: /srv has a default label
    mgr.label_domain(live_domain("vm", disk(f, "vda", flags)))
    assert label_of(f) == expected
    assert lxattrs(f) == {}
    mgr.restore_domain("vm")
    assert label_of(f) == expected


def test_cdrom_is_readonly(tmp_path: Path, mgr: SecurityManager) -> None:
    iso = make(tmp_path / "install.iso")
    mgr.label_domain(
        live_domain(
            "vm",
            f"<disk type='file' device='cdrom'><source file='{iso}'/><target dev='hdc'/></disk>",
        )
    )
    assert label_of(iso) == CONTENT


def chain_xml(top: Path, mid: Path, base: Path, top_extra: str = "", mid_extra: str = "") -> str:
    return (
        f"<disk type='file' device='disk'><source file='{top}'>{top_extra}</source>"
        "<backingStore type='file'><format type='qcow2'/>"
        f"<source file='{mid}'>{mid_extra}</source>"
        "<backingStore type='file'><format type='raw'/>"
        f"<source file='{base}'/><backingStore/></backingStore></backingStore>"
        "<target dev='vda'/></disk>"
    )


def test_backing_chain(tmp_path: Path, mgr: SecurityManager) -> None:
    top, mid, base = (make(tmp_path / n) for n in ("top.qcow2", "mid.qcow2", "base.raw"))
    mgr.label_domain(live_domain("vm", chain_xml(top, mid, base)))
    assert [label_of(p) for p in (top, mid, base)] == [IMG, CONTENT, CONTENT]
    assert lxattrs(top) == remembered(ORIG)
    assert lxattrs(mid) == {} and lxattrs(base) == {}
    mgr.restore_domain("vm")
    # Restore touches only the top of the chain (§6.2).
    assert [label_of(p) for p in (top, mid, base)] == [ORIG, CONTENT, CONTENT]
    assert lxattrs(top) == {}


def test_top_source_label_applies_to_the_whole_chain(tmp_path: Path, mgr: SecurityManager) -> None:
    top, mid, base = (make(tmp_path / n) for n in ("top", "mid", "base"))
    over = f"<seclabel model='selinux' relabel='yes'><label>{CUSTOM}</label></seclabel>"
    mgr.label_domain(live_domain("vm", chain_xml(top, mid, base, top_extra=over)))
    assert [label_of(p) for p in (top, mid, base)] == [CUSTOM, CUSTOM, CUSTOM]
    assert lxattrs(top) == remembered(ORIG)  # the top is still remembered
    mgr.restore_domain("vm")
    assert label_of(top) == ORIG


def test_top_source_relabel_no_skips_the_whole_chain(tmp_path: Path, mgr: SecurityManager) -> None:
    top, mid, base = (make(tmp_path / n) for n in ("top", "mid", "base"))
    no = "<seclabel model='selinux' relabel='no'/>"
    mgr.label_domain(live_domain("vm", chain_xml(top, mid, base, top_extra=no)))
    assert [label_of(p) for p in (top, mid, base)] == [ORIG, ORIG, ORIG]
    assert selinux_ops(mgr.restore_ops(live_domain("vm", chain_xml(top, mid, base, no)))) == []


def test_backing_layer_seclabels(tmp_path: Path, mgr: SecurityManager) -> None:
    top, mid, base = (make(tmp_path / n) for n in ("top", "mid", "base"))
    own = f"<seclabel model='selinux' relabel='yes'><label>{CUSTOM}</label></seclabel>"
    mgr.label_domain(live_domain("vm", chain_xml(top, mid, base, mid_extra=own)))
    assert [label_of(p) for p in (top, mid, base)] == [IMG, CUSTOM, CONTENT]
    top2, mid2, base2 = (make(tmp_path / f"{n}2") for n in ("top", "mid", "base"))
    no = "<seclabel model='selinux' relabel='no'/>"
    mgr.label_domain(
        live_domain("vm2", chain_xml(top2, mid2, base2, mid_extra=no), level="s0:c1,c2")
    )
    assert [label_of(p) for p in (top2, mid2, base2)] == [IMG2, ORIG, CONTENT]


def test_dir_and_network_disks_are_not_labelled(
    tmp_path: Path, mgr: SecurityManager, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "floppy"
    d.mkdir()
    dom = live_domain(
        "vm",
        f"<disk type='dir' device='floppy'><source dir='{d}'/><target dev='fda'/></disk>"
        "<disk type='network' device='disk'><source protocol='nbd' name='x'>"
        "<host name='example.org' port='10809'/></source><target dev='vdb'/></disk>",
    )
    with caplog.at_level(logging.WARNING):
        assert selinux_ops(mgr.set_ops(mgr.gen_labels(dom))) == []
    assert f"Unable to relabel directory tree {d} for disk fda" in caplog.text
    assert selinux_ops(mgr.restore_ops(dom)) == []


def test_block_device_disk(tmp_path: Path, mgr: SecurityManager) -> None:
    blk = tmp_path / "sdz"
    os.mknod(blk, stat.S_IFBLK | 0o600, os.makedev(7, 200))  # a loop device number
    host_selinux.setfilecon(blk, ORIG)
    mgr.label_domain(live_domain("vm", disk(blk, "vda", kind="block")))
    assert label_of(blk) == IMG
    assert lxattrs(blk) == remembered(ORIG)
    mgr.restore_domain("vm")
    assert label_of(blk) == ORIG and lxattrs(blk) == {}


def test_symlinked_image_labels_and_restores_the_target(
    tmp_path: Path, mgr: SecurityManager
) -> None:
    real = make(tmp_path / "real.img")
    link = tmp_path / "link.img"
    link.symlink_to(real)
    mgr.label_domain(live_domain("vm", disk(link, "vda")))
    assert label_of(real) == IMG
    assert host_selinux.lgetfilecon(link) is None  # the link itself is not relabelled
    mgr.restore_domain("vm")
    assert label_of(real) == ORIG and lxattrs(real) == {}


# --- §5.2: the other resources, labelled and restored (§6.2) ----------------------------


def test_os_files(tmp_path: Path, mgr: SecurityManager) -> None:
    names = ("vmlinuz", "initrd", "board.dtb", "slic.dat", "VARS.fd", "CODE.fd")
    kernel, initrd, dtb, acpi, nvram, code = (make(tmp_path / n) for n in names)
    os_xml = (
        f"<loader readonly='yes' type='pflash'>{code}</loader><nvram>{nvram}</nvram>"
        f"<kernel>{kernel}</kernel><initrd>{initrd}</initrd><dtb>{dtb}</dtb>"
        f"<acpi><table type='slic'>{acpi}</table></acpi>"
    )
    mgr.label_domain(live_domain("vm", os_extra=os_xml))
    for p in (kernel, initrd, dtb, acpi):
        assert label_of(p) == CONTENT, p
        assert lxattrs(p) == remembered(ORIG), p  # remembered, unlike read-only disks
    assert label_of(nvram) == IMG and lxattrs(nvram) == remembered(ORIG)
    assert label_of(code) == ORIG and lxattrs(code) == {}  # firmware code: not labelled
    mgr.restore_domain("vm")
    for p in (kernel, initrd, dtb, acpi, nvram, code):
        assert label_of(p) == ORIG, p
        assert lxattrs(p) == {}, p


def test_chardev_file_dev_and_custom_label_round_trip(tmp_path: Path, mgr: SecurityManager) -> None:
    log = make(tmp_path / "serial.log")
    custom = make(tmp_path / "custom.log")
    dev = tmp_path / "ttyS9"
    os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    host_selinux.setfilecon(dev, ORIG)
    off = make(tmp_path / "off.log")
    mgr.label_domain(
        live_domain(
            "vm",
            f"<serial type='file'><source path='{log}'/><target port='0'/></serial>"
            f"<serial type='dev'><source path='{dev}'/><target port='1'/></serial>"
            f"<parallel type='file'><source path='{custom}'><seclabel model='selinux' "
            f"relabel='yes'><label>{CUSTOM}</label></seclabel></source>"
            "<target port='0'/></parallel>"
            f"<console type='file'><source path='{off}'>"
            "<seclabel model='selinux' relabel='no'/></source><target port='0'/></console>",
        )
    )
    assert (label_of(log), label_of(dev), label_of(custom), label_of(off)) == (
        IMG,
        IMG,
        CUSTOM,
        ORIG,
    )
    assert lxattrs(log) == lxattrs(dev) == lxattrs(custom) == remembered(ORIG)
    assert lxattrs(off) == {}
    mgr.restore_domain("vm")
    assert [label_of(p) for p in (log, dev, custom, off)] == [ORIG] * 4
    assert all(lxattrs(p) == {} for p in (log, dev, custom, off))


def test_pipe_with_in_and_out(tmp_path: Path, mgr: SecurityManager) -> None:
    base = tmp_path / "chan"
    make(base)
    for suffix in (".in", ".out"):
        os.mkfifo(f"{base}{suffix}")
        host_selinux.setfilecon(f"{base}{suffix}", ORIG)
    mgr.label_domain(
        live_domain(
            "vm",
            f"<channel type='pipe'><source path='{base}'/>"
            "<target type='virtio' name='org.example.pipe'/></channel>",
        )
    )
    assert label_of(f"{base}.in") == label_of(f"{base}.out") == IMG
    assert label_of(base) == ORIG  # both halves exist: the path itself is not used
    assert lxattrs(f"{base}.in") == lxattrs(f"{base}.out") == remembered(ORIG)
    mgr.restore_domain("vm")
    assert label_of(f"{base}.in") == label_of(f"{base}.out") == ORIG
    assert lxattrs(f"{base}.in") == lxattrs(f"{base}.out") == {}


def test_pipe_with_only_one_half_uses_the_path(tmp_path: Path, mgr: SecurityManager) -> None:
    base = make(tmp_path / "chan")
    make(tmp_path / "chan.in")
    mgr.label_domain(
        live_domain("vm", f"<serial type='pipe'><source path='{base}'/><target port='0'/></serial>")
    )
    assert label_of(base) == IMG
    assert label_of(tmp_path / "chan.in") == ORIG


def test_unix_sockets(srv_dir: Path, mgr: SecurityManager) -> None:
    conn_path, bind_path = srv_dir / "connect.sock", srv_dir / "bind.sock"
    socks = [bind_socket(conn_path), bind_socket(bind_path)]
    try:
        for p in (conn_path, bind_path):
            host_selinux.setfilecon(p, ORIG)
        mgr.label_domain(
            live_domain(
                "vm",
                f"<channel type='unix'><source mode='connect' path='{conn_path}'/>"
                "<target type='virtio' name='a'/></channel>"
                f"<channel type='unix'><source mode='bind' path='{bind_path}'/>"
                "<target type='virtio' name='b'/></channel>",
            )
        )
        assert label_of(conn_path) == label_of(bind_path) == IMG
        # Sockets cannot be opened for the metadata lock, so nothing is remembered.
        assert lxattrs(conn_path) == lxattrs(bind_path) == {}
        mgr.restore_domain("vm")
        # Connect mode: restored, to the file-contexts default (nothing was remembered).
        assert label_of(conn_path) == "system_u:object_r:var_t:s0"
        assert label_of(bind_path) == IMG  # bind mode: never restored
    finally:
        for s in socks:
            s.close()


def test_input_memory_and_capabilities_hostdev(tmp_path: Path, mgr: SecurityManager) -> None:
    evdev = tmp_path / "event7"
    # A node of a driver this kernel has (/dev/zero's numbers), so it can be opened for
    # the metadata lock; /dev/input nodes do not exist on this machine.
    os.mknod(evdev, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    host_selinux.setfilecon(evdev, ORIG)
    nvdimm, pmem, blk = make(tmp_path / "nvdimm0"), make(tmp_path / "pmem0"), make(tmp_path / "b")
    dom = live_domain(
        "vm",
        f"<input type='passthrough' bus='virtio'><source evdev='{evdev}'/></input>"
        f"<memory model='nvdimm'><source><path>{nvdimm}</path></source>"
        "<target><size unit='MiB'>1</size></target></memory>"
        f"<memory model='virtio-pmem'><source><path>{pmem}</path></source>"
        "<target><size unit='MiB'>1</size></target></memory>"
        f"<hostdev mode='capabilities' type='storage'><source><block>{blk}</block></source>"
        "</hostdev>",
    )
    mgr.label_domain(dom)
    for p in (evdev, nvdimm, pmem, blk):
        assert label_of(p) == IMG, p
        assert lxattrs(p) == remembered(ORIG), p
    mgr.restore_domain("vm")
    for p in (evdev, nvdimm, pmem, blk):
        assert label_of(p) == ORIG, p
        assert lxattrs(p) == {}, p


@pytest.fixture
def fake_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sysfs tree for hostdevs and a TPM (none of them exist on this machine)."""
    sysfs = tmp_path / "sys"
    groups = sysfs / "kernel" / "iommu_groups"
    (groups / "12").mkdir(parents=True)
    (groups / "14").mkdir(parents=True)
    pci = sysfs / "bus" / "pci" / "devices"
    (pci / "0000:06:02.0").mkdir(parents=True)
    (pci / "0000:06:02.0" / "iommu_group").symlink_to(groups / "12")
    legacy = pci / "0000:07:00.0"
    legacy.mkdir()
    for n in ("config", "resource", "rom"):
        make(legacy / n)
    mdev = sysfs / "bus" / "mdev" / "devices" / "c2177883-f1bb-47f0-914d-32a22e3a8804"
    mdev.mkdir(parents=True)
    (mdev / "iommu_group").symlink_to(groups / "14")
    sg = sysfs / "bus" / "scsi" / "devices" / "2:0:3:0" / "scsi_generic" / "sg5"
    sg.mkdir(parents=True)
    cancel = sysfs / "class" / "tpm" / "tpm0" / "device"
    cancel.mkdir(parents=True)
    make(cancel / "cancel")
    monkeypatch.setattr(
        host_devices, "hostdev_paths", functools.partial(host_devices.hostdev_paths, sysfs=sysfs)
    )
    monkeypatch.setattr(
        host_devices,
        "tpm_cancel_path",
        functools.partial(host_devices.tpm_cancel_path, sysfs=sysfs),
    )
    return sysfs


HOSTDEVS = {
    "usb": "<hostdev mode='subsystem' type='usb'><source><address bus='1' device='2'/>"
    "</source></hostdev>",
    "usb-missing": "<hostdev mode='subsystem' type='usb'><source missing='yes'>"
    "<address bus='1' device='3'/></source></hostdev>",
    "pci-vfio": "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
    "<address domain='0x0000' bus='0x06' slot='0x02' function='0x0'/></source></hostdev>",
    "mdev": "<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>"
    "<address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source></hostdev>",
    "scsi": "<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host2'/>"
    "<address bus='0' target='3' unit='0'/></source></hostdev>",
    "scsi-ro": "<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host2'/>"
    "<address bus='0' target='3' unit='0'/></source><readonly/></hostdev>",
    "scsi-shared": "<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host2'/>"
    "<address bus='0' target='3' unit='0'/></source><shareable/></hostdev>",
    "scsi_host": "<hostdev mode='subsystem' type='scsi_host'><source protocol='vhost' "
    "wwpn='naa.5123456789abcde0'/></hostdev>",
}


@pytest.mark.parametrize(
    ("kind", "set_expected", "restore_expected"),
    [
        ("usb", [("/dev/bus/usb/001/002", IMG, True)], [("/dev/bus/usb/001/002", None, True)]),
        ("usb-missing", [], []),
        ("pci-vfio", [("/dev/vfio/12", IMG, False)], [("/dev/vfio/12", None, False)]),
        ("mdev", [("/dev/vfio/14", IMG, False)], [("/dev/vfio/14", None, False)]),
        ("scsi", [("/dev/sg5", IMG, True)], [("/dev/sg5", None, True)]),
        ("scsi-ro", [("/dev/sg5", CONTENT, True)], []),
        ("scsi-shared", [("/dev/sg5", FILE, True)], []),
        ("scsi_host", [("/dev/vhost-scsi", IMG, True)], [("/dev/vhost-scsi", None, True)]),
    ],
)
def test_hostdev_plans(
    fake_sysfs: Path,
    mgr: SecurityManager,
    kind: str,
    set_expected: list[tuple[str, str | None, bool]],
    restore_expected: list[tuple[str, str | None, bool]],
) -> None:
    """Device nodes under /dev: the plan is checked, not applied (they do not exist)."""
    dom = live_domain("vm", HOSTDEVS[kind])
    live = mgr.gen_labels(dom)
    assert selinux_ops(mgr.set_ops(live)) == set_expected
    assert selinux_ops(mgr.restore_ops(live)) == restore_expected


def test_legacy_pci_assignment_labels_sysfs_files(fake_sysfs: Path, mgr: SecurityManager) -> None:
    files = [fake_sysfs / "bus/pci/devices/0000:07:00.0" / n for n in ("config", "resource", "rom")]
    dom = live_domain(
        "vm",
        "<hostdev mode='subsystem' type='pci'><driver name='kvm'/><source>"
        "<address domain='0x0000' bus='0x07' slot='0x00' function='0x0'/></source></hostdev>",
    )
    mgr.label_domain(dom)
    assert [label_of(p) for p in files] == [IMG] * 3
    assert all(lxattrs(p) == remembered(ORIG) for p in files)
    mgr.restore_domain("vm")
    assert [label_of(p) for p in files] == [ORIG] * 3
    assert all(lxattrs(p) == {} for p in files)


def test_tpm_passthrough(fake_sysfs: Path, mgr: SecurityManager) -> None:
    dom = mgr.gen_labels(
        live_domain(
            "vm",
            "<tpm model='tpm-tis'><backend type='passthrough'>"
            "<device path='/dev/tpm0'/></backend></tpm>",
        )
    )
    cancel = str(fake_sysfs / "class/tpm/tpm0/device/cancel")
    assert selinux_ops(mgr.set_ops(dom)) == [("/dev/tpm0", IMG, False), (cancel, IMG, False)]
    assert selinux_ops(mgr.restore_ops(dom)) == [("/dev/tpm0", None, False), (cancel, None, False)]


def test_tpm_without_cancel_file_is_an_error(tmp_path: Path, mgr: SecurityManager) -> None:
    dom = mgr.gen_labels(
        live_domain(
            "vm",
            "<tpm model='tpm-tis'><backend type='passthrough'>"
            "<device path='/dev/tpm0'/></backend></tpm>",
        )
    )
    with pytest.raises(SecurityError, match="No usable TPM cancel path for device /dev/tpm0"):
        mgr.set_ops(dom)


def test_tpm_emulator_gets_nothing(mgr: SecurityManager) -> None:
    dom = mgr.gen_labels(
        live_domain("vm", "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>")
    )
    assert selinux_ops(mgr.set_ops(dom)) == selinux_ops(mgr.restore_ops(dom)) == []


def test_labelskip_disk_is_never_restored(tmp_path: Path, mgr: SecurityManager) -> None:
    f = make(tmp_path / "a.img")
    dom = live_domain(
        "vm", disk(f, "vda", source_extra="<seclabel model='selinux' labelskip='yes'/>")
    )
    assert selinux_ops(mgr.restore_ops(dom)) == []


def test_static_relabel_no_and_none_touch_nothing(tmp_path: Path, mgr: SecurityManager) -> None:
    f = make(tmp_path / "a.img")
    for name, seclabel in (
        (
            "st",
            "<seclabel type='static' model='selinux'>"
            "<label>system_u:system_r:svirt_t:s0:c5,c6</label></seclabel>",
        ),
        ("un", "<seclabel type='none' model='selinux'/>"),
    ):
        dom = parse_domain(
            f"<domain type='kvm'><name>{name}</name>{seclabel}<devices>{disk(f, 'vda')}"
            "</devices></domain>"
        )
        live = mgr.gen_labels(dom)
        assert selinux_ops(mgr.set_ops(live)) == []
        assert selinux_ops(mgr.restore_ops(live)) == []


# --- §6.1/§6.2: restore without recall ------------------------------------------------------


def test_remember_owner_off_restores_file_context_defaults(srv_dir: Path, tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path, remember_owner=False))
    f, k = make(srv_dir / "a.img"), make(srv_dir / "vmlinuz")
    mgr.label_domain(live_domain("vm", disk(f, "vda"), os_extra=f"<kernel>{k}</kernel>"))
    assert (label_of(f), label_of(k)) == (IMG, CONTENT)
    assert lxattrs(f) == lxattrs(k) == {}  # nothing is remembered
    mgr.restore_domain("vm")
    assert label_of(f) == label_of(k) == default_label(f) == "system_u:object_r:var_t:s0"


def test_unlabelled_file_is_unlabelled_again(srv_dir: Path, mgr: SecurityManager) -> None:
    """libvirt cannot remember "no label" and restores the file_contexts default; svirt
    marks it (issue 11: where there is no default the VM's label stayed for good) and
    puts the file back exactly as it was."""
    f = make(srv_dir / "a.img", label=None)  # no label: libvirt's xattr cannot hold that
    mgr.label_domain(live_domain("vm", disk(f, "vda")))
    assert label_of(f) == IMG and lxattrs(f) == {}
    assert os.getxattr(f, "trusted.svirt.security.selinux_unlabelled") == b"1"
    _, result = mgr.restore_domain("vm")
    assert label_of(f) is None and default_label(f) is not None
    # issue 14: said as it happened (not "restored to None")
    assert [o.text for o in result.report if o.driver == "selinux"] == [
        "label removed: the file had none before"
    ]
    assert "trusted.svirt.security.selinux_unlabelled" not in os.listxattr(f)


def test_no_default_label_leaves_the_file_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = SecurityManager(config(tmp_path, remember_owner=False))
    f = make(tmp_path / "a.img")  # /tmp/.* has no file-contexts entry
    mgr.label_domain(live_domain("vm", disk(f, "vda")))
    with caplog.at_level(logging.WARNING):
        _, result = mgr.restore_domain("vm")
    assert result.errors == []
    assert [o for _, o in result.outcomes] == [Outcome.NO_DEFAULT]
    # issue 14: said as it is, never "restored"
    (entry,) = [o for o in result.report if o.driver == "selinux"]
    assert entry.outcome == "no-default"
    assert entry.text == (
        f"label {IMG} left as it is: nothing remembered and no default label in file_contexts"
    )
    assert f"cannot lookup default selinux label for {f}" in caplog.text
    assert label_of(f) == IMG


def test_restore_goes_on_past_a_deleted_file(tmp_path: Path, mgr: SecurityManager) -> None:
    gone, kept = make(tmp_path / "gone.img"), make(tmp_path / "kept.img")
    mgr.label_domain(live_domain("vm", disk(gone, "vda") + disk(kept, "vdb")))
    gone.unlink()
    mgr.restore_domain("vm")  # a file that is gone has nothing left to restore
    assert label_of(kept) == ORIG and lxattrs(kept) == {}
    assert mgr.store.read("vm") is None


# --- §7: refcounts, staleness, in use ------------------------------------------------------


def test_kernel_shared_by_two_domains_refcount_2_1_0(tmp_path: Path, mgr: SecurityManager) -> None:
    k = make(tmp_path / "vmlinuz")
    os_xml = f"<kernel>{k}</kernel>"
    mgr.label_domain(live_domain("a", os_extra=os_xml))
    mgr.label_domain(live_domain("b", os_extra=os_xml, level="s0:c1,c2"))
    assert label_of(k) == CONTENT
    assert lxattrs(k) == remembered(ORIG, ref=2)
    mgr.restore_domain("a")
    assert label_of(k) == CONTENT  # b still uses it
    assert lxattrs(k) == remembered(ORIG, ref=1)
    mgr.restore_domain("b")
    assert label_of(k) == ORIG
    assert lxattrs(k) == {}


def test_image_shared_with_one_label_by_two_domains(tmp_path: Path, mgr: SecurityManager) -> None:
    f = make(tmp_path / "cluster.img")
    over = f"<seclabel model='selinux' relabel='yes'><label>{IMG}</label></seclabel>"
    mgr.label_domain(live_domain("a", disk(f, "vda")))
    mgr.label_domain(live_domain("b", disk(f, "vda", source_extra=over), level="s0:c1,c2"))
    assert lxattrs(f) == remembered(ORIG, ref=2)
    mgr.restore_domain("b")
    assert label_of(f) == IMG and lxattrs(f) == remembered(ORIG, ref=1)
    mgr.restore_domain("a")
    assert label_of(f) == ORIG and lxattrs(f) == {}


def snapshot(*paths: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in paths:
        st = os.stat(p)
        out[str(p)] = (st.st_uid, st.st_gid, {n: os.getxattr(p, n) for n in os.listxattr(p)})
    return out


def test_in_use_refusal(tmp_path: Path, mgr: SecurityManager) -> None:
    shared, own = make(tmp_path / "a.img"), make(tmp_path / "b-own.img")
    mgr.label_domain(live_domain("a", disk(shared, "vda")))
    before = snapshot(shared, own)
    b = live_domain("b", disk(own, "vda") + disk(shared, "vdb"), level="s0:c1,c2")
    with pytest.raises(OperationInvalid) as info:
        mgr.label_domain(b)
    assert str(info.value) == (
        "Requested operation is not valid: Setting different SELinux label on "
        f"{shared} which is already in use"
    )
    assert snapshot(shared, own) == before  # b's own disk was put back too
    assert mgr.store.read("b") is None
    drv = mgr.selinux
    assert drv is not None and drv.ledger.owner("s0:c1,c2") is None
    mgr.restore_domain("a")
    assert label_of(shared) == ORIG and lxattrs(shared) == {}


@pytest.mark.parametrize("dac", [False, True], ids=["selinux", "selinux+dac"])
def test_failed_second_user_keeps_the_first_users_memory(tmp_path: Path, dac: bool) -> None:
    """platform.md: libvirt's cleanup after a failed start erases the remembered state of
    an image another domain uses; when that one stops, the original is lost."""
    mgr = SecurityManager(config(tmp_path, dynamic_ownership=dac))
    f = make(tmp_path / "a.img")
    os.chown(f, 1234, 1234)  # an owner with no passwd entry, as on a real image store
    over = f"<seclabel model='selinux' relabel='yes'><label>{IMG}</label></seclabel>"
    mgr.label_domain(live_domain("a", disk(f, "vda")))
    first = snapshot(f)
    # b uses the image with a's label (so the refcount goes to 2), then fails on a
    # kernel that does not exist.
    b = live_domain(
        "b",
        disk(f, "vda", source_extra=over),
        os_extra=f"<kernel>{tmp_path}/missing-vmlinuz</kernel>",
        level="s0:c1,c2",
    )
    with pytest.raises(LabelSystemError, match="missing-vmlinuz"):
        mgr.label_domain(b)
    assert snapshot(f) == first
    # Trying to clean b up again must not count a's use off either.
    with pytest.raises(SecurityError, match="has no labels to restore"):
        mgr.restore_domain(
            "b",
            fallback=parse_domain(
                f"<domain type='kvm'><name>b</name><devices>{disk(f, 'vda')}</devices></domain>"
            ),
        )
    assert snapshot(f) == first
    mgr.restore_domain("a")
    assert label_of(f) == ORIG
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 1234)
    assert lxattrs(f) == {}


def test_stale_remembered_state_from_another_boot(
    tmp_path: Path, mgr: SecurityManager, caplog: pytest.LogCaptureFixture
) -> None:
    f = make(tmp_path / "a.img")
    # A domain using the file when the host last crashed: its count and label are stale.
    os.setxattr(f, "trusted.libvirt.security.selinux", b"system_u:object_r:old_t:s0")
    os.setxattr(f, "trusted.libvirt.security.ref_selinux", b"3")
    os.setxattr(f, "trusted.libvirt.security.timestamp_selinux", b"1600000000")
    with caplog.at_level(logging.WARNING):
        mgr.label_domain(live_domain("vm", disk(f, "vda")))
    # The message names the file, not the descriptor the transaction pinned it with.
    assert f"Invalid XATTR timestamp detected on {f} secdriver=selinux" in caplog.text
    assert lxattrs(f) == remembered(ORIG)
    mgr.restore_domain("vm")
    assert label_of(f) == ORIG and lxattrs(f) == {}


def test_stale_state_at_restore_falls_back_to_the_default(
    srv_dir: Path, mgr: SecurityManager
) -> None:
    f = make(srv_dir / "a.img")
    mgr.label_domain(live_domain("vm", disk(f, "vda")))
    os.setxattr(f, "trusted.libvirt.security.timestamp_selinux", b"1600000000")  # "reboot"
    mgr.restore_domain("vm")
    assert label_of(f) == default_label(f)
    assert lxattrs(f) == {}


def test_libvirt_user_of_the_same_label_is_counted(tmp_path: Path, mgr: SecurityManager) -> None:
    """A libvirt (5.x era) domain labelled this kernel with the same label this boot."""
    k = make(tmp_path / "vmlinuz", label=CONTENT)
    os.setxattr(k, "trusted.libvirt.security.selinux", ORIG.encode())
    os.setxattr(k, "trusted.libvirt.security.ref_selinux", b"1")
    os.setxattr(
        k,
        "trusted.libvirt.security.timestamp_selinux",
        b"c7a5fdbd-edaf-9455-926a-d65c16db1809-" + btime(),
    )
    mgr.label_domain(live_domain("vm", os_extra=f"<kernel>{k}</kernel>"))
    assert os.getxattr(k, "trusted.libvirt.security.ref_selinux") == b"2"
    mgr.restore_domain("vm")
    assert label_of(k) == CONTENT  # libvirt's domain still uses it
    assert os.getxattr(k, "trusted.libvirt.security.ref_selinux") == b"1"


def test_malformed_refcount_fails_the_label_and_changes_nothing(
    tmp_path: Path, mgr: SecurityManager
) -> None:
    f = make(tmp_path / "a.img")
    os.setxattr(f, "trusted.libvirt.security.ref_selinux", b"lots")
    os.setxattr(f, "trusted.libvirt.security.timestamp_selinux", btime())
    before = snapshot(f)
    with pytest.raises(SecurityError, match=f"internal error: malformed refcount lots on {f}"):
        mgr.label_domain(live_domain("vm", disk(f, "vda")))
    assert snapshot(f) == before


# --- §7.3.1: failures of the set -----------------------------------------------------------


def test_read_only_filesystem_is_a_soft_failure(
    tmp_path: Path, mgr: SecurityManager, caplog: pytest.LogCaptureFixture
) -> None:
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    make(src / "a.img")
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with caplog.at_level(logging.INFO, logger="svirt.security.selinux"):
            mgr.label_domain(live_domain("vm", disk(ro / "a.img", "vda")))
        assert f"Setting security context '{IMG}' on '{ro / 'a.img'}' not supported" in caplog.text
        assert label_of(src / "a.img") == ORIG and lxattrs(src / "a.img") == {}
        _, result = mgr.restore_domain("vm")
        assert result.errors == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def fail_setfilecon(monkeypatch: pytest.MonkeyPatch, err: int, path: Path) -> None:
    """Inject a failure of the security.selinux write on one path (the trusted.* writes
    stay real): the case libvirt handles in SELinuxSetFilecon's error path."""
    real = host_selinux.setfilecon
    ino = os.stat(path).st_ino

    def setfilecon(p: Any, context: str, *, follow: bool = True) -> None:
        if os.stat(p).st_ino == ino:
            raise OSError(err, os.strerror(err), str(p))
        real(p, context, follow=follow)

    monkeypatch.setattr(host_selinux, "setfilecon", setfilecon)


@pytest.mark.parametrize("err", [errno.EOPNOTSUPP, errno.EROFS])
def test_soft_failure_rolls_back_the_remember_bookkeeping(
    tmp_path: Path, mgr: SecurityManager, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    f = make(tmp_path / "a.img")
    fail_setfilecon(monkeypatch, err, f)
    mgr.label_domain(live_domain("vm", disk(f, "vda")))  # soft: the label succeeds
    assert label_of(f) == ORIG
    assert lxattrs(f) == {}  # the count taken for this use was given back


def test_soft_failure_of_a_second_user_keeps_the_first_count(
    tmp_path: Path, mgr: SecurityManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = make(tmp_path / "vmlinuz")
    mgr.label_domain(live_domain("a", os_extra=f"<kernel>{k}</kernel>"))
    fail_setfilecon(monkeypatch, errno.EOPNOTSUPP, k)
    mgr.label_domain(live_domain("b", os_extra=f"<kernel>{k}</kernel>", level="s0:c1,c2"))
    assert lxattrs(k) == remembered(ORIG, ref=1)


def test_driver_soft_failure_outcome(
    tmp_path: Path, mgr: SecurityManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = make(tmp_path / "a.img")
    fail_setfilecon(monkeypatch, errno.ENOTSUP, f)
    drv = mgr.selinux
    assert drv is not None
    out = drv.apply(LabelOp("selinux", Action.SET, str(f), IMG, True, "disk vda"))
    assert out is Outcome.SOFT_FAILED
    assert lxattrs(f) == {}


def test_hard_failure_is_libvirts_error_and_rolls_back(
    tmp_path: Path, mgr: SecurityManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = make(tmp_path / "a.img")
    fail_setfilecon(monkeypatch, errno.EIO, f)
    drv = mgr.selinux
    assert drv is not None
    with pytest.raises(LabelSystemError) as info:
        drv.apply(LabelOp("selinux", Action.SET, str(f), IMG, True, "disk vda"))
    assert str(info.value) == (
        f"unable to set security context '{IMG}' on '{f}': Input/output error"
    )
    assert info.value.errno == errno.EIO
    assert lxattrs(f) == {}


def test_immutable_file_is_fatal_without_selinux(tmp_path: Path, mgr: SecurityManager) -> None:
    """EPERM for real (chattr +i). Without SELinux in the kernel svirt is strict, as an
    enforcing host would be (documented deviation from libvirt's leniency)."""
    iso = make(tmp_path / "install.iso")
    subprocess.run(["chattr", "+i", str(iso)], check=True)
    try:
        with pytest.raises(LabelSystemError) as info:
            mgr.label_domain(live_domain("vm", disk(iso, "hdc", "<readonly/>")))
        assert str(info.value) == (
            f"unable to set security context '{CONTENT}' on '{iso}': Operation not permitted"
        )
        assert mgr.store.read("vm") is None
    finally:
        subprocess.run(["chattr", "-i", str(iso)], check=True)
    assert label_of(iso) == ORIG


@pytest.mark.parametrize("flags", ["", "<readonly/>"], ids=["remembered", "not-remembered"])
def test_missing_files_are_errors(tmp_path: Path, mgr: SecurityManager, flags: str) -> None:
    other = make(tmp_path / "other.img")
    before = snapshot(other)
    missing = tmp_path / "nope.img"
    with pytest.raises(LabelSystemError) as info:
        mgr.label_domain(live_domain("vm", disk(other, "vda") + disk(missing, "vdb", flags)))
    assert info.value.errno == errno.ENOENT
    assert str(missing) in str(info.value) and "No such file or directory" in str(info.value)
    assert snapshot(other) == before
    assert mgr.store.read("vm") is None
