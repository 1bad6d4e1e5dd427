"""Formatting back to XML: libvirt's seclabel forms (spec §2.1 "Format") and round trips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from svirt.domain import Seclabel, SeclabelType, format_domain, format_seclabel, parse_domain

DOMAINS = Path(__file__).parent / "data" / "domains"


def test_seclabel_forms() -> None:
    live = Seclabel(
        SeclabelType.DYNAMIC,
        "selinux",
        True,
        "system_u:system_r:svirt_t:s0:c392,c662",
        "system_u:object_r:svirt_image_t:s0:c392,c662",
    )
    assert format_seclabel(live) == (
        "<seclabel type='dynamic' model='selinux' relabel='yes'>\n"
        "  <label>system_u:system_r:svirt_t:s0:c392,c662</label>\n"
        "  <imagelabel>system_u:object_r:svirt_image_t:s0:c392,c662</imagelabel>\n"
        "</seclabel>\n"
    )
    assert format_seclabel(Seclabel(SeclabelType.DYNAMIC, "selinux", True)) == (
        "<seclabel type='dynamic' model='selinux' relabel='yes'/>\n"
    )
    assert format_seclabel(Seclabel(SeclabelType.NONE, "selinux", False)) == (
        "<seclabel type='none' model='selinux'/>\n"
    )
    # imagelabel only with relabel=yes; baselabel only for dynamic.
    static = Seclabel(
        SeclabelType.STATIC,
        "selinux",
        False,
        "a_u:b_r:c_t:s0:c1,c2",
        "a_u:object_r:i_t:s0:c1,c2",
        "x_u:y_r:z_t:s0",
    )
    assert format_seclabel(static) == (
        "<seclabel type='static' model='selinux' relabel='no'>\n"
        "  <label>a_u:b_r:c_t:s0:c1,c2</label>\n"
        "</seclabel>\n"
    )


def test_live_round_trip() -> None:
    d = parse_domain((DOMAINS / "ok-live-status.xml").read_bytes())
    again = parse_domain(format_domain(d, live=True))
    assert again.seclabels == d.seclabels
    assert again.disks == d.disks
    assert again.id == 1


def test_generated_labels_round_trip_through_live_xml() -> None:
    d = parse_domain((DOMAINS / "ok-override.xml").read_bytes())
    gen = replace(
        d.seclabels[0],
        label="system_u:system_r:svirt_custom_t:s0:c1,c2",
        imagelabel="system_u:object_r:svirt_image_t:s0:c1,c2",
    )
    live = replace(d, seclabels=(gen,), id=7)
    text = format_domain(live, live=True)
    assert "<domain type='kvm' id='7'>" in text
    back = parse_domain(text)  # id='7' → parsed live
    assert back.seclabels[0].label == gen.label
    assert back.seclabels[0].imagelabel == gen.imagelabel
    assert back.seclabels[0].baselabel == "system_u:system_r:svirt_custom_t:s0"
    assert back.disks == d.disks


def test_inactive_output_skips_default_device_seclabel() -> None:
    xml = (
        "<domain type='kvm' id='1'><name>t</name><seclabel type='none' model='selinux'/>"
        "<devices><disk type='file'><source file='/a'><seclabel model='selinux' "
        "labelskip='yes'/></source><target dev='vda'/></disk></devices></domain>"
    )
    d = parse_domain(xml)
    assert "labelskip='yes'" in format_domain(d, live=True)
    plain = replace(
        d,
        disks=(
            replace(
                d.disks[0],
                source=replace(
                    d.disks[0].source,
                    seclabels=(
                        replace(
                            d.disks[0].source.seclabels[0],  # type: ignore[union-attr,arg-type]
                            labelskip=False,
                        ),
                    ),
                ),
            ),
        ),
    )
    assert "<seclabel model" not in format_domain(plain, live=False)


def test_relabel_optional_round_trips() -> None:
    d = parse_domain((DOMAINS / "ok-optional.xml").read_bytes())
    text = format_domain(d, live=False)
    assert "relabel='optional'" in text
    assert parse_domain(text).disks == d.disks


def test_implicit_dac_omitted_in_migratable() -> None:
    d = parse_domain((DOMAINS / "ok-none.xml").read_bytes())
    dac = Seclabel(SeclabelType.DYNAMIC, "dac", True, "+1:+1", "+1:+1", implicit=True)
    d2 = replace(d, seclabels=(*d.seclabels, dac))
    assert "model='dac'" in format_domain(d2)
    assert "model='dac'" not in format_domain(d2, migratable=True)


def test_network_source_seclabels_not_formatted() -> None:
    xml = (
        "<domain type='kvm'><name>t</name><devices><disk type='network'><source "
        "protocol='nbd' name='x'><seclabel model='selinux' relabel='no'/></source>"
        "<target dev='vda'/></disk></devices></domain>"
    )
    assert "seclabel" not in format_domain(parse_domain(xml))
