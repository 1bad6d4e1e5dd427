"""``svirt domblklist`` on a real running domain (real QEMU, issue 14 item 6).

The expected bytes are checked twice: against the table written here, and against the
real ``virsh domblklist`` (libvirt 9.0, installed by scripts/setup.sh) run on the same
live XML through libvirt's in-process test driver (``test:///FILE``, no daemon), so the
layout is virsh's own and not our reading of it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import svirt
from fsutil import image_dir, make_file
from svirt.cli.domblklist import vsh_table
from svirt.cli.main import main
from svirt.domain.blklist import BlockDevice, block_devices
from svirt.errors import XMLError

QEMU_DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{img}'/>
<target dev='sda' bus='scsi'/></disk>
<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
<target dev='sdb' bus='scsi'/><readonly/></disk>
</devices></domain>"""


@pytest.fixture
def vmdir() -> Iterator[Path]:
    """Images where the QEMU user can reach them (pytest's tmp dirs are 0700)."""
    with image_dir("svirt-blk-") as d:
        yield d


def _conf(d: Path) -> Path:
    conf = d / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{d / "state"}"\n'
        f'libvirt_run_dir = "{d / "libvirt-run"}"\nvm_identity = "off"\n'
    )
    return conf


def _image(path: Path) -> Path:
    make_file(path)
    os.truncate(path, 1 << 20)
    return path


def _virsh(live_xml: str, d: Path, name: str, *options: str) -> str:
    """Real virsh on the same XML: libvirt's test driver reads a <node> document."""
    body = live_xml.split("?>", 1)[-1] if live_xml.startswith("<?xml") else live_xml
    node = d / "node.xml"
    node.write_text(f"<node>{body}</node>")
    out = subprocess.run(
        ["virsh", "-c", f"test://{node}", "domblklist", name, *options],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.qemu
def test_domblklist_of_a_running_domain_with_a_hotplugged_disk(
    vmdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _conf(vmdir)
    img = _image(vmdir / "root disk.img")  # a space: the cell is printed as it is
    hot = _image(vmdir / "hot.img")
    host = svirt.Host(conf)
    dom = host.start(QEMU_DOMAIN.format(name="blk", img=img))
    try:
        assert main(["domblklist", "blk", "--config", str(conf)]) == 0
        assert capsys.readouterr().out == (
            " Target   Source\n"
            f"{'-' * (6 + 3 + len(str(img)) + 3)}\n"
            f" sda      {img}\n"
            " sdb      -\n"
            "\n"
        )
        dom.attach_disk(
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{hot}'/><target dev='sdc' bus='scsi'/></disk>"
        )
        assert main(["domblklist", "--config", str(conf), "blk", "--details"]) == 0
        details = capsys.readouterr().out
        assert details == (
            " Type   Device   Target   Source\n"
            f"{'-' * (4 + 3 + 6 + 3 + 6 + 3 + len(str(img)) + 3)}\n"
            f" file   disk     sda      {img}\n"
            " file   cdrom    sdb      -\n"
            f" file   disk     sdc      {hot}\n"
            "\n"
        )
        assert main(["domblklist", "blk", "--config", str(conf)]) == 0
        plain = capsys.readouterr().out
        # the very bytes virsh prints for the same live XML
        assert plain == _virsh(dom.xml, vmdir, "blk")
        assert details == _virsh(dom.xml, vmdir, "blk", "--details")

        assert main(["domblklist", "blk", "--json", "--config", str(conf)]) == 0
        assert json.loads(capsys.readouterr().out) == [
            {"type": "file", "device": "disk", "target": "sda", "source": str(img)},
            {"type": "file", "device": "cdrom", "target": "sdb", "source": None},
            {"type": "file", "device": "disk", "target": "sdc", "source": str(hot)},
        ]
        assert host.domain("blk").block_devices()[2] == BlockDevice(
            type="file", device="disk", target="sdc", source=str(hot)
        )

        dom.detach_disk("sdc")
        assert main(["domblklist", "blk", "--config", str(conf)]) == 0
        assert "sdc" not in capsys.readouterr().out
    finally:
        dom.stop(force=True)


def test_unknown_domain_uses_libvirts_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _conf(tmp_path)
    assert main(["domblklist", "nope", "--config", str(conf)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: failed to get domain 'nope'\n"


def test_sources_of_every_disk_type_as_virsh_reads_them(tmp_path: Path) -> None:
    """One XML with each kind of source; virsh on the same document is the oracle."""
    xml = (
        "<domain type='qemu'><name>kinds</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        "<disk type='block' device='lun'><source dev='/dev/sdz'/>"
        "<target dev='sda' bus='scsi'/></disk>"
        "<disk type='network' device='disk'><source protocol='rbd' name='pool/img'>"
        "<host name='mon'/></source><target dev='vda' bus='virtio'/></disk>"
        "<disk type='dir' device='floppy'><source dir='/srv/floppy'/>"
        "<target dev='fda' bus='fdc'/></disk>"
        "<disk type='volume' device='disk'><source pool='default' volume='v1'/>"
        "<target dev='vdb' bus='virtio'/></disk>"
        "</devices></domain>"
    )
    got = block_devices(xml)
    assert [(d.type, d.device, d.target, d.source) for d in got] == [
        ("block", "lun", "sda", "/dev/sdz"),
        ("network", "disk", "vda", "pool/img"),
        ("dir", "floppy", "fda", "/srv/floppy"),
        ("volume", "disk", "vdb", "v1"),  # the volume, not the pool
    ]
    # virsh (the test driver orders disks by bus, as libvirt's parser does): compare
    # rows as sets of lines, the header and the dashed line exactly.
    rows = [[d.type, d.device, d.target, d.source or "-"] for d in got]
    ours = vsh_table(["Type", "Device", "Target", "Source"], rows) + "\n"
    theirs = _virsh(xml, tmp_path, "kinds", "--details")
    assert ours.splitlines()[:2] == theirs.splitlines()[:2]
    assert sorted(ours.splitlines()) == sorted(theirs.splitlines())


def test_empty_source_nvme_source_and_broken_xml() -> None:
    # an empty attribute is no source (virsh's virXPathString returns NULL for "")
    empty = (
        "<domain type='qemu'><name>e</name><devices><disk type='file' device='disk'>"
        "<source file=''/><target dev='vdb' bus='virtio'/></disk></devices></domain>"
    )
    assert block_devices(empty)[0].source is None
    nvme = (
        "<domain type='qemu'><name>n</name><devices><disk type='nvme' device='disk'>"
        "<source type='pci' managed='yes' namespace='1'>"
        "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>"
        "<target dev='vde' bus='virtio'/></disk></devices></domain>"
    )
    assert block_devices(nvme)[0].source == "nvme://0000:01:00.0/1"
    with pytest.raises(XMLError, match="unable to query block list"):
        block_devices("<domain><devices><disk><source file='/x'/></disk></devices></domain>")
    with pytest.raises(XMLError, match="XML error"):
        block_devices("<domain>")


def test_vsh_table_escapes_control_characters_and_counts_wide_ones() -> None:
    table = vsh_table(["Target", "Source"], [["vda", "/a\tb"], ["日本", "/\\x/"]])
    assert table.splitlines() == [
        " Target   Source",
        # Target is 6 columns wide, Source 7 ('/a\x09b' and '/\x5cx/')
        "-" * (6 + 3 + 7 + 3),
        " vda      /a\\x09b",
        " 日本     /\\x5cx/",  # two wide characters take four columns
    ]
