"""The QEMU command line: exact argv for known domains (golden, hand-checked against the
shape libvirt 9.0 generates), the refusals, and real qemu-system-x86_64 accepting the
command lines of several domains (images made with qemu-img in tmp_path)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svirt.domain import Disk, StorageSource, parse_domain
from svirt.errors import LaunchError
from svirt.host.ids import resolve_identity
from svirt.launch import process, qemu
from svirt.launch.qmp import QMPClient

RICH = """<domain type='kvm'>
  <name>rich,vm</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/srv/vm/vmlinuz</kernel><initrd>/srv/vm/initrd.img</initrd>
    <cmdline>console=ttyS0 root=/dev/vda,rw</cmdline></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='DIR/top.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='DIR/mid.qcow2'/>
        <backingStore type='file'><format type='raw'/><source file='DIR/base.raw'/>
          <backingStore/></backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><driver type='raw'/><source file='DIR/boot.iso'/>
      <target dev='hdc' bus='ide'/><readonly/></disk>
    <disk type='block' device='disk'><driver type='raw'/><source dev='/dev/sdz'/>
      <target dev='sdb' bus='scsi'/><shareable/></disk>
    <disk type='file' device='disk'><driver type='raw'/><source file='DIR/ro.img'/>
      <target dev='vdc' bus='virtio'/><readonly/></disk>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <serial type='file'><source path='DIR/serial,1.log'/><target port='1'/></serial>
    <channel type='unix'><source mode='bind' path='DIR/agent.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <channel type='pipe'><source path='DIR/chan.pipe'/>
      <target type='virtio' name='org.example.pipe'/></channel>
    <parallel type='null'/>
  </devices>
</domain>"""

RICH_ARGV = [
    "qemu-system-x86_64",
    "-name", "guest=rich,,vm,process=qemu:rich,,vm,debug-threads=on",
    "-machine", "pc,usb=off,dump-guest-core=off",
    "-accel", "tcg",
    "-m", "size=131072k",
    "-overcommit", "mem-lock=off",
    "-smp", "2,sockets=2,cores=1,threads=1",
    "-uuid", "c7a5fdbd-edaf-9455-926a-d65c16db1809",
    "-no-user-config", "-nodefaults",
    "-chardev", "socket,id=charmonitor,fd=3,server=on,wait=off",
    "-mon", "chardev=charmonitor,id=monitor,mode=control",
    "-rtc", "base=utc",
    "-boot", "strict=on",
    "-kernel", "/srv/vm/vmlinuz",
    "-initrd", "/srv/vm/initrd.img",
    "-append", "console=ttyS0 root=/dev/vda,rw",
    "-device", '{"driver":"virtio-scsi-pci","id":"scsi0"}',
    "-device", '{"driver":"virtio-serial-pci","id":"virtio-serial0"}',
    "-blockdev", '{"driver":"file","filename":"/d/base.raw","node-name":"svirt-vda-2-storage",'
    '"auto-read-only":true,"discard":"unmap"}',
    "-blockdev", '{"node-name":"svirt-vda-2-format","read-only":true,"driver":"raw",'
    '"file":"svirt-vda-2-storage"}',
    "-blockdev", '{"driver":"file","filename":"/d/mid.qcow2","node-name":"svirt-vda-1-storage",'
    '"auto-read-only":true,"discard":"unmap"}',
    "-blockdev", '{"node-name":"svirt-vda-1-format","read-only":true,"driver":"qcow2",'
    '"file":"svirt-vda-1-storage","backing":"svirt-vda-2-format"}',
    "-blockdev", '{"driver":"file","filename":"/d/top.qcow2","node-name":"svirt-vda-0-storage",'
    '"auto-read-only":true,"discard":"unmap"}',
    "-blockdev", '{"node-name":"svirt-vda-0-format","read-only":false,"driver":"qcow2",'
    '"file":"svirt-vda-0-storage","backing":"svirt-vda-1-format"}',
    "-device", '{"driver":"virtio-blk-pci","drive":"svirt-vda-0-format","id":"virtio-disk0"}',
    "-blockdev", '{"driver":"file","filename":"/d/boot.iso","node-name":"svirt-hdc-0-storage",'
    '"auto-read-only":true,"discard":"unmap"}',
    "-blockdev", '{"node-name":"svirt-hdc-0-format","read-only":true,"driver":"raw",'
    '"file":"svirt-hdc-0-storage"}',
    "-device", '{"driver":"ide-cd","bus":"ide.1","unit":0,"drive":"svirt-hdc-0-format",'
    '"id":"ide0-1-0"}',
    "-blockdev", '{"driver":"host_device","filename":"/dev/sdz","node-name":"svirt-sdb-0-storage",'
    '"auto-read-only":true,"discard":"unmap"}',
    "-blockdev", '{"node-name":"svirt-sdb-0-format","read-only":false,"driver":"raw",'
    '"file":"svirt-sdb-0-storage"}',
    "-device", '{"driver":"scsi-hd","bus":"scsi0.0","channel":0,"scsi-id":0,"lun":1,'
    '"drive":"svirt-sdb-0-format","id":"scsi0-0-0-1","share-rw":true}',
    "-blockdev", '{"driver":"file","filename":"/d/ro.img","node-name":"svirt-vdc-0-storage",'
    '"auto-read-only":true,"discard":"unmap"}',
    "-blockdev", '{"node-name":"svirt-vdc-0-format","read-only":true,"driver":"raw",'
    '"file":"svirt-vdc-0-storage"}',
    "-device", '{"driver":"virtio-blk-pci","drive":"svirt-vdc-0-format","id":"virtio-disk2"}',
    "-chardev", "pty,id=charserial0",
    "-device", '{"driver":"isa-serial","index":0,"chardev":"charserial0","id":"serial0"}',
    "-chardev", "file,id=charserial1,path=/d/serial,,1.log",
    "-device", '{"driver":"isa-serial","index":1,"chardev":"charserial1","id":"serial1"}',
    "-chardev", "null,id=charparallel0",
    "-device", '{"driver":"isa-parallel","index":0,"chardev":"charparallel0","id":"parallel0"}',
    "-chardev", "socket,id=charchannel0,path=/d/agent.sock,server=on,wait=off",
    "-device", '{"driver":"virtserialport","bus":"virtio-serial0.0",'
    '"name":"org.qemu.guest_agent.0","chardev":"charchannel0","id":"channel0"}',
    "-chardev", "pipe,id=charchannel1,path=/d/chan.pipe",
    "-device", '{"driver":"virtserialport","bus":"virtio-serial0.0","name":"org.example.pipe",'
    '"chardev":"charchannel1","id":"channel1"}',
    "-display", "none",
    "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    "-msg", "timestamp=on",
]  # fmt: skip


def _domain(xml: str, directory: str = "/d") -> Any:
    return parse_domain(xml.replace("DIR", directory))


def _minimal(extra: str = "", dtype: str = "qemu", machine: str = "pc") -> str:
    return (
        f"<domain type='{dtype}'><name>mini</name><memory unit='MiB'>64</memory>"
        f"<os><type machine='{machine}'>hvm</type></os><devices>{extra}</devices></domain>"
    )


# --- golden -----------------------------------------------------------------------------


def test_rich_domain_argv_is_exact() -> None:
    cmd = qemu.build_command(_domain(RICH), qmp_fd=3)
    assert list(cmd.argv) == RICH_ARGV
    assert cmd.accel == "tcg"
    assert cmd.notes == (
        "domain type 'kvm': /dev/kvm is not usable by the QEMU user here; "
        "running under TCG emulation",
    )


def test_kvm_when_available_and_paused_start_and_socket_path() -> None:
    cmd = qemu.build_command(
        _domain(_minimal(dtype="kvm")),
        qmp_socket="/run/svirt/a,b.qmp",
        kvm_available=True,
        start_paused=True,
        binary="/usr/bin/qemu-system-x86_64",
    )
    argv = list(cmd.argv)
    assert cmd.accel == "kvm" and cmd.notes == ()
    assert argv[:4] == [
        "/usr/bin/qemu-system-x86_64",
        "-name",
        "guest=mini,process=qemu:mini,debug-threads=on",
        "-S",
    ]
    assert argv[argv.index("-accel") + 1] == "kvm"
    monitor = argv[argv.index("-chardev") + 1]
    assert monitor == "socket,id=charmonitor,path=/run/svirt/a,,b.qmp,server=on,wait=off"


def test_qemu_type_domain_ignores_kvm() -> None:
    cmd = qemu.build_command(_domain(_minimal()), qmp_fd=3, kvm_available=True)
    assert cmd.accel == "tcg" and cmd.notes == ()


def test_q35_sata_and_scsi_cdrom() -> None:
    xml = _minimal(
        "<disk type='file' device='disk'><source file='/d/a.raw'/><target dev='sdc' bus='sata'/>"
        "</disk><disk type='file' device='cdrom'><source file='/d/b.iso'/>"
        "<target dev='sda' bus='scsi'/></disk>"
        "<disk type='file' device='cdrom'><target dev='sdd' bus='sata'/></disk>",
        machine="q35",
    )
    argv = list(qemu.build_command(_domain(xml), qmp_fd=3).argv)
    devices = [json.loads(a) for i, a in enumerate(argv) if i and argv[i - 1] == "-device"]
    assert devices == [
        {"driver": "virtio-scsi-pci", "id": "scsi0"},
        {"driver": "ide-hd", "bus": "ide.2", "drive": "svirt-sdc-0-format", "id": "sata0-0-2"},
        {
            "driver": "scsi-cd",
            "bus": "scsi0.0",
            "channel": 0,
            "scsi-id": 0,
            "lun": 0,
            "drive": "svirt-sda-0-format",
            "id": "scsi0-0-0-0",
        },
        {"driver": "ide-cd", "bus": "ide.3", "id": "sata0-0-3"},  # empty drive: no media
    ]


def test_pc_sata_gets_an_ahci_controller() -> None:
    xml = _minimal(
        "<disk type='file'><source file='/d/a.raw'/><target dev='sda' bus='sata'/></disk>"
    )
    argv = qemu.build_command(_domain(xml), qmp_fd=3).argv
    assert '{"driver":"ich9-ahci","id":"sata0"}' in argv
    assert (
        '{"driver":"ide-hd","bus":"sata0.0","drive":"svirt-sda-0-format","id":"sata0-0-0"}' in argv
    )


def test_chardev_backends() -> None:
    xml = _minimal(
        "<serial type='unix'><source mode='connect' path='/d/s.sock'/></serial>"
        "<serial type='dev'><source path='/dev/ttyS1'/></serial>"
        "<parallel type='dev'><source path='/dev/parport0'/></parallel>"
        "<console type='pty'><target type='virtio'/></console>"
    )
    argv = list(qemu.build_command(_domain(xml), qmp_fd=3).argv)
    chardevs = [a for i, a in enumerate(argv) if argv[i - 1] == "-chardev"][1:]
    assert chardevs == [
        "socket,id=charserial0,path=/d/s.sock,server=off",
        "tty,id=charserial1,path=/dev/ttyS1",
        "parport,id=charparallel0,path=/dev/parport0",
        "pty,id=charconsole0",
    ]
    assert (
        '{"driver":"virtconsole","bus":"virtio-serial0.0","chardev":"charconsole0",'
        '"id":"console0"}' in argv
    )


def test_console_without_serial_becomes_a_serial_port() -> None:
    argv = qemu.build_command(_domain(_minimal("<console type='pty'/>")), qmp_fd=3).argv
    assert '{"driver":"isa-serial","index":0,"chardev":"charconsole0","id":"console0"}' in argv


def test_disk_helpers_for_hotplug() -> None:
    disk = Disk(
        device="disk",
        target="sdb",
        bus="scsi",
        source=StorageSource(type="block", path="/dev/loop5", format="raw"),
    )
    assert qemu.disk_blockdevs(disk) == [
        {
            "driver": "host_device",
            "filename": "/dev/loop5",
            "node-name": "svirt-sdb-0-storage",
            "auto-read-only": True,
            "discard": "unmap",
        },
        {
            "node-name": "svirt-sdb-0-format",
            "read-only": False,
            "driver": "raw",
            "file": "svirt-sdb-0-storage",
        },
    ]
    assert qemu.disk_device(disk)["id"] == qemu.disk_device_id(disk) == "scsi0-0-0-1"
    assert qemu.disk_node_name(disk) == "svirt-sdb-0-format"
    assert [qemu.disk_index(t) for t in ("vda", "vdz", "vdaa", "hdd", "xvdb")] == [0, 25, 26, 3, 1]


@pytest.mark.parametrize(
    ("extra", "dtype", "message"),
    [
        (
            "<disk type='network'><source protocol='nbd' name='x'/><target dev='vda'/></disk>",
            "qemu",
            "unsupported configuration: disk type 'network' of disk vda is not supported",
        ),
        (
            "<disk type='file' device='cdrom'><source file='/d/x.iso'/>"
            "<target dev='vda' bus='virtio'/></disk>",
            "qemu",
            "unsupported configuration: disk type of 'vda' does not support ejectable media",
        ),
        (
            "<disk type='file'><source file='/d/x'/><target dev='hda' bus='ide'/>"
            "<readonly/></disk>",
            "qemu",
            "unsupported configuration: readonly ide disks are not supported",
        ),
        (
            "<disk type='file'><driver type='nbd'/><source file='/d/x'/><target dev='vda'/></disk>",
            "qemu",
            "unsupported configuration: storage format 'nbd' of disk vda is not supported",
        ),
        (
            "<disk type='file'><source file='/d/x'/><target dev='disk0'/></disk>",
            "qemu",
            "internal error: Unknown disk name 'disk0' and no address specified",
        ),
        (
            "<serial type='tcp'/>",
            "qemu",
            "unsupported configuration: serial of type 'tcp' is not supported by svirt",
        ),
        ("", "xen", "Emulator 'qemu-system-x86_64' does not support virt type 'xen'"),
        (
            "",
            "qemu-cmdline",
            "unsupported configuration: an initrd, a kernel command line or a dtb needs a <kernel>",
        ),
    ],
)
def test_refusals(extra: str, dtype: str, message: str) -> None:
    xml = _minimal(extra, dtype=dtype)
    if dtype == "qemu-cmdline":
        xml = _minimal().replace("</os>", "<cmdline>quiet</cmdline></os>")
    with pytest.raises(LaunchError) as info:
        qemu.build_command(_domain(xml), qmp_fd=3)
    assert message in str(info.value)


def test_exactly_one_monitor() -> None:
    with pytest.raises(ValueError):
        qemu.build_command(_domain(_minimal()))
    with pytest.raises(ValueError):
        qemu.build_command(_domain(_minimal()), qmp_fd=3, qmp_socket="/x")


def test_kvm_usable_follows_the_device_mode(tmp_path: Path) -> None:
    assert not qemu.kvm_usable(path=str(tmp_path / "nothing"))
    (tmp_path / "file").write_text("")
    assert not qemu.kvm_usable(path=str(tmp_path / "file"))
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    st = os.stat("/dev/kvm")
    qemu_user = resolve_identity("svirt-qemu", "svirt-qemu")
    if st.st_uid == qemu_user.uid:
        allowed = st.st_mode & 0o600 == 0o600
    elif st.st_gid in qemu_user.groups:
        allowed = st.st_mode & 0o060 == 0o060
    else:
        allowed = st.st_mode & 0o006 == 0o006
    assert qemu.kvm_usable(qemu_user) == (allowed and qemu.kvm_usable())


# --- real QEMU --------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Path]:
    def img(*args: str) -> None:
        subprocess.run(["qemu-img", "create", "-q", *args], check=True, cwd=tmp_path)

    img("-f", "raw", "base.raw", "1M")
    img("-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2")
    img("-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2")
    img("-f", "raw", "boot.iso", "1M")
    img("-f", "raw", "ro.img", "1M")
    img("-f", "raw", "a.raw", "1M")
    os.mkfifo(tmp_path / "chan.pipe")
    yield tmp_path


class Running:
    def __init__(self, spawned: process.Spawned, qmp: QMPClient, log: Path) -> None:
        self.spawned, self.qmp, self.log = spawned, qmp, log
        self.exit_code: int | None = None

    def wait(self, timeout: float = 10) -> int | None:
        self.exit_code = process.wait_exit(self.spawned.pid, timeout)
        return self.exit_code


@pytest.fixture
def start_qemu(tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def start(domain: Any, **kw: Any) -> Running:
        path = tmp_path / f"qmp{len(started)}.sock"
        log = tmp_path / f"qemu{len(started)}.log"
        sock = process.bind_monitor_socket(path)
        try:
            cmd = qemu.build_command(domain, qmp_fd=sock.fileno(), **kw)
            spawned = process.spawn(cmd.argv, log_path=log, pass_fds=[sock.fileno()])
            client_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client_sock.connect(str(path))
        finally:
            sock.close()  # QEMU holds the listening socket now
        try:
            running = Running(spawned, QMPClient.from_socket(client_sock, timeout=20), log)
        except Exception:
            process.terminate(spawned.pid, 5)
            raise AssertionError(f"QEMU failed: {log.read_text()}") from None
        started.append(running)
        return running

    yield start
    for r in started:
        if not r.qmp.closed:
            r.qmp.close()
        if r.exit_code is None:  # never signal a reaped pid: it may belong to someone else
            process.terminate(r.spawned.pid, 5)


def _block_chain(info: dict[str, Any]) -> list[str]:
    # An explicitly given backing chain makes QEMU describe images with a "json:{...}"
    # pseudo file name; the real file name is inside it.
    names = []
    image = info["inserted"]["image"]
    while image is not None:
        names.append(image["filename"])
        image = image.get("backing-image")
    return names


@pytest.mark.qemu
def test_rich_domain_starts(images: Path, start_qemu: Any) -> None:
    # The block device of RICH becomes a raw file: QEMU runs as root here, no private /dev.
    xml = RICH.replace(
        "type='block' device='disk'><driver type='raw'/><source dev='/dev/sdz'/>",
        "type='file' device='disk'><driver type='raw'/><source file='DIR/a.raw'/>",
    )
    os_start, os_end = xml.index("<kernel>"), xml.index("</os>")
    xml = xml[:os_start] + xml[os_end:]  # no kernel to boot here
    vm = start_qemu(_domain(xml, str(images)), start_paused=True)
    assert vm.qmp.query_status()["status"] == "prelaunch"
    blocks = {b["qdev"]: b for b in vm.qmp.execute("query-block")}
    vda = blocks["/machine/peripheral/virtio-disk0/virtio-backend"]
    chain = _block_chain(vda)
    assert len(chain) == 3
    for name, expected in zip(chain, ("top.qcow2", "mid.qcow2", "base.raw"), strict=True):
        assert f"{images}/{expected}" in name
    assert not vda["inserted"]["ro"]
    assert blocks["/machine/peripheral/virtio-disk2/virtio-backend"]["inserted"]["ro"]
    assert blocks["ide0-1-0"]["inserted"]["ro"]
    labels = {c["label"] for c in vm.qmp.execute("query-chardev")}
    assert {"charmonitor", "charserial0", "charserial1", "charparallel0"} <= labels
    assert {"charchannel0", "charchannel1"} <= labels
    assert (images / "agent.sock").exists()  # QEMU created the listening channel socket
    vm.qmp.quit()
    assert vm.wait() == 0


@pytest.mark.qemu
def test_q35_domain_with_sata_scsi_and_unix_connect(images: Path, start_qemu: Any) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(images / "console.sock"))
    listener.listen(1)
    xml = _minimal(
        f"<disk type='file'><source file='{images}/a.raw'/><target dev='sdc' bus='sata'/></disk>"
        f"<disk type='file' device='cdrom'><source file='{images}/boot.iso'/>"
        "<target dev='sda' bus='scsi'/></disk>"
        f"<serial type='unix'><source mode='connect' path='{images}/console.sock'/></serial>",
        machine="q35",
    )
    vm = start_qemu(_domain(xml), start_paused=True)
    conn, _ = listener.accept()  # QEMU connected to our socket
    conn.close()
    listener.close()
    qdevs = {b["qdev"] for b in vm.qmp.execute("query-block")}
    assert {"sata0-0-2", "scsi0-0-0-0"} <= qdevs
    vm.qmp.quit()
    assert vm.wait() == 0


@pytest.mark.qemu
def test_pc_ide_disk_running_guest(images: Path, start_qemu: Any) -> None:
    xml = _minimal(f"<disk type='file'><source file='{images}/a.raw'/><target dev='hda'/></disk>")
    vm = start_qemu(_domain(xml))
    assert vm.qmp.query_status() == {"status": "running", "singlestep": False, "running": True}
    vm.qmp.quit()
    assert vm.wait() == 0


@pytest.mark.qemu
def test_kvm_domain_uses_kvm_when_usable(start_qemu: Any) -> None:
    if not qemu.kvm_usable():
        pytest.skip("KVM is not usable on this host")
    vm = start_qemu(_domain(_minimal(dtype="kvm")), kvm_available=True, start_paused=True)
    assert vm.qmp.execute("query-kvm") == {"enabled": True, "present": True}
    vm.qmp.quit()
