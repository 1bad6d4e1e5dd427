"""Domain XML parsing: the model, libvirt's seclabel rules and texts (spec §2)."""

from __future__ import annotations

import pytest

from svirt.domain import ChardevKind, SeclabelType, parse_domain
from svirt.domain.resources import ResourceKind, domain_resources
from svirt.errors import XMLError


def dom(body: str, attrs: str = "") -> str:
    return f"<domain type='kvm'{attrs}><name>t</name><memory>1024</memory>{body}</domain>"


def test_full_model(data_dir) -> None:  # type: ignore[no-untyped-def]
    d = parse_domain((data_dir / "domains" / "ok-dynamic.xml").read_bytes())
    assert (d.name, d.type, d.vcpus, d.memory_kib) == ("vm-full", "kvm", 2, 131072)
    assert d.uuid == "c7a5fdbd-edaf-9455-926a-d65c16db1809"
    assert d.emulator == "/usr/bin/qemu-system-x86_64"
    vda = d.disks[0]
    assert vda.driver_type == "qcow2"
    chain = list(vda.source.chain())  # type: ignore[union-attr]
    assert [s.path for s in chain] == [
        "/var/lib/svirt/images/top.qcow2",
        "/var/lib/svirt/images/mid.qcow2",
        "/var/lib/svirt/images/base.raw",
    ]
    assert [s.readonly for s in chain] == [False, True, True]  # backing stores are read-only
    assert chain[2].format == "raw"
    vdb = d.disks[1]
    assert vdb.source.type == "block" and vdb.path == "/dev/sde"  # type: ignore[union-attr]
    sl = vdb.source.seclabel("selinux")  # type: ignore[union-attr]
    assert sl is not None and sl.relabel is False
    assert d.disks[2].shareable and d.disks[3].readonly
    assert d.disks[4].source.type == "network" and d.disks[4].path is None  # type: ignore[union-attr]
    assert d.disks[5].source.type == "dir"  # type: ignore[union-attr]
    assert d.os.kernel == "/var/lib/svirt/boot/vmlinuz" and d.os.dtb.endswith("board.dtb")  # type: ignore[union-attr]
    assert d.os.loader is not None and d.os.loader.readonly and d.os.loader.type == "pflash"
    assert d.os.nvram == "/var/lib/svirt/nvram/vm-full_VARS.fd"
    assert d.os.acpi_tables == ("/var/lib/svirt/boot/slic.dat",)
    usb, pci = d.hostdevs
    assert usb.usb_path == "/dev/bus/usb/001/002"
    assert pci.pci_address == "0000:06:02.0" and pci.pci_driver == "vfio"
    kinds = [(c.kind, c.type) for c in d.chardevs]
    assert (ChardevKind.SERIAL, "file") in kinds and (ChardevKind.CHANNEL, "unix") in kinds
    assert [c.mode for c in d.chardevs if c.type == "unix"] == ["bind"]
    assert d.inputs[0].path == "/dev/input/event1"
    assert d.tpms[0].device_path == "/dev/tpm0"
    assert d.memory_devices[0].path == "/var/lib/svirt/nvdimm0"
    assert d.memory_devices[0].size_kib == 131072
    assert d.filesystems[0].source == "/srv/share" and d.filesystems[0].driver == "virtiofs"


def test_resources_in_selinux_order(data_dir) -> None:  # type: ignore[no-untyped-def]
    d = parse_domain((data_dir / "domains" / "ok-dynamic.xml").read_bytes())
    res = list(domain_resources(d))
    kinds = [r.kind for r in res]
    # disks (with chain), hostdevs, inputs, memory, TPMs, chardevs, nvram, kernel...
    assert kinds[:3] == [ResourceKind.DISK, ResourceKind.BACKING, ResourceKind.BACKING]
    order = [
        ResourceKind.HOSTDEV,
        ResourceKind.INPUT,
        ResourceKind.MEMORY,
        ResourceKind.TPM,
        ResourceKind.CHARDEV,
        ResourceKind.NVRAM,
        ResourceKind.KERNEL,
        ResourceKind.INITRD,
        ResourceKind.DTB,
        ResourceKind.ACPI_TABLE,
    ]
    firsts = [kinds.index(k) for k in order]
    assert firsts == sorted(firsts)
    top = res[0]
    assert top.chain_top and not res[1].chain_top and res[1].readonly
    assert res[2].parent_seclabels == top.seclabels
    pty = [r for r in res if r.kind is ResourceKind.CHARDEV]
    assert all(r.chardev_type != "pty" for r in pty)  # ptys are not labelled


def test_seclabel_defaults() -> None:
    # Absent type → dynamic; static/none default relabel=no (spec §2.4).
    d = parse_domain(dom("<seclabel model='selinux'/>"))
    assert d.seclabels[0].type is SeclabelType.DYNAMIC and d.seclabels[0].relabel
    d = parse_domain(
        dom("<seclabel type='static' model='selinux'><label>a_u:b_r:c_t:s0</label></seclabel>")
    )
    assert d.seclabels[0].relabel is False and d.seclabels[0].label == "a_u:b_r:c_t:s0"
    d = parse_domain(dom("<seclabel type='none' model='selinux'/>"))
    assert d.seclabels[0].relabel is False


def test_inactive_ignores_dynamic_label_and_imagelabel() -> None:
    body = (
        "<seclabel type='dynamic' model='selinux'><label>a_u:b_r:c_t:s0:c1,c2</label>"
        "<imagelabel>a_u:object_r:i_t:s0:c1,c2</imagelabel>"
        "<baselabel>system_u:system_r:svirt_custom_t:s0</baselabel></seclabel>"
    )
    inactive = parse_domain(dom(body), inactive=True).seclabels[0]
    assert inactive.label is None and inactive.imagelabel is None
    assert inactive.baselabel == "system_u:system_r:svirt_custom_t:s0"
    live = parse_domain(dom(body), inactive=False).seclabels[0]
    assert live.label == "a_u:b_r:c_t:s0:c1,c2"
    assert live.imagelabel == "a_u:object_r:i_t:s0:c1,c2"


def test_live_mode_detected_from_id_and_domstatus(data_dir) -> None:  # type: ignore[no-untyped-def]
    d = parse_domain((data_dir / "domains" / "ok-live-status.xml").read_bytes())
    assert d.id == 1
    assert d.seclabel("selinux").label == "system_u:system_r:svirt_t:s0:c392,c662"  # type: ignore[union-attr]
    assert d.seclabel("dac").imagelabel == "+107:+107"  # type: ignore[union-attr]
    with pytest.raises(XMLError, match="security label is missing"):
        parse_domain(dom("<seclabel type='dynamic' model='selinux'/>", " id='3'"))


def test_model_none_inactive_is_forced_to_none() -> None:
    sl = parse_domain(dom("<seclabel type='dynamic' model='none'/>"), inactive=True).seclabels[0]
    assert (sl.type, sl.model, sl.relabel) == (SeclabelType.NONE, "none", False)


def test_modelless_takes_default_model() -> None:
    assert parse_domain(dom("<seclabel/>")).seclabels[0].model == "selinux"
    sl = parse_domain(dom("<seclabel/>"), default_model="none").seclabels[0]
    assert (sl.type, sl.model) == (SeclabelType.NONE, "none")
    sl = parse_domain(dom("<seclabel type='none'/>"), default_model="selinux").seclabels[0]
    assert sl.model == "selinux" and sl.type is SeclabelType.NONE
    # A dynamic label with a baselabel is not defaulted.
    with pytest.raises(XMLError, match="missing security model in domain seclabel"):
        parse_domain(dom("<seclabel><baselabel>a_u:b_r:c_t:s0</baselabel></seclabel>"))
    # Live parse: dynamic without model is not defaulted either.
    with pytest.raises(XMLError, match="missing security model in domain seclabel"):
        parse_domain(
            dom(
                "<seclabel><label>a_u:b_r:c_t:s0:c1,c2</label>"
                "<imagelabel>a_u:b_r:i_t:s0:c1,c2</imagelabel></seclabel>",
                " id='1'",
            )
        )
    # No host model: a lone model-less label is kept as is.
    assert parse_domain(dom("<seclabel/>"), default_model=None).seclabels[0].model is None


def test_long_model_treated_as_absent() -> None:
    sl = parse_domain(dom(f"<seclabel model='{'x' * 257}'/>")).seclabels[0]
    assert sl.model == "selinux"


def test_device_seclabels() -> None:
    body = (
        "<devices><disk type='file'><source file='/a'><seclabel model='selinux' "
        "relabel='no'/><seclabel model='dac'><label>+1:+2</label></seclabel></source>"
        "<target dev='vda'/></disk>"
        "<serial type='unix'><source mode='connect' path='/s'><seclabel relabel='no'/>"
        "</source></serial></devices>"
    )
    d = parse_domain(dom(body))
    src = d.disks[0].source
    assert src is not None
    assert src.seclabel("selinux").relabel is False  # type: ignore[union-attr]
    assert src.seclabel("dac").label == "+1:+2"  # type: ignore[union-attr]
    ch = d.chardevs[0]
    assert ch.mode == "connect" and ch.seclabels[0].model is None  # no model: matches nothing
    assert ch.seclabel("selinux") is None


def test_labelskip_only_in_live_parse() -> None:
    body = (
        "<devices><disk type='file'><source file='/a'><seclabel model='selinux' "
        "labelskip='yes'/></source><target dev='vda'/></disk></devices>"
    )
    assert parse_domain(dom(body)).disks[0].source.seclabels[0].labelskip is False  # type: ignore[union-attr]
    live = parse_domain(dom("<seclabel type='none' model='selinux'/>" + body, " id='1'"))
    assert live.disks[0].source.seclabels[0].labelskip is True  # type: ignore[union-attr]


def test_unknown_elements_ignored() -> None:
    d = parse_domain(
        dom(
            "<devices><frobnicator x='1'/><disk type='file'><source file='/a'/>"
            "<target dev='vda'/><weird/></disk></devices><metadata><a/></metadata>"
        )
    )
    assert len(d.disks) == 1


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (dom("<vcpu>zero</vcpu>"), "maximum vcpus count must be an integer"),
        (dom("<uuid>nope</uuid>"), "malformed uuid element"),
        ("<domain type='kvm'><name>a/b</name></domain>", "cannot contain '/'"),
        (
            dom("<devices><disk type='floppy'/></devices>"),
            "Invalid value for attribute 'type' in element 'disk': 'floppy'.",
        ),
        (
            dom(
                "<devices><hostdev mode='subsystem' type='usb'><source><address bus='zz' "
                "device='1'/></source></hostdev></devices>"
            ),
            "Invalid value for attribute 'bus' in element 'address': 'zz'.",
        ),
        (
            dom(
                "<devices><disk type='file'><source file='/a'/><target dev='vda'/></disk>"
                "<disk type='file'><source file='/b'/><target dev='vda'/></disk></devices>"
            ),
            "target 'vda' duplicated",
        ),
        (
            dom(
                "<devices><serial type='unix'><source mode='listen' path='/s'/></serial></devices>"
            ),
            "Invalid value for attribute 'mode' in element 'source': 'listen'.",
        ),
        (
            "<domain type='kvm'><name>t</name><memory unit='parsecs'>1</memory></domain>",
            "unknown unit 'parsecs'",
        ),
    ],
)
def test_model_errors(xml: str, message: str) -> None:
    with pytest.raises(
        XMLError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        parse_domain(xml, source="x.xml")


def test_error_names_source() -> None:
    with pytest.raises(XMLError) as info:
        parse_domain("<domain", source="bad.xml")
    assert str(info.value).startswith("bad.xml: XML error: malformed XML")
