"""DAC driver on real files (spec §8.2–§8.3): chown, remembered owners, refcounts, in-use."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from fsutil import config, disk_xml, domain_xml, make_file, state, svirt_xattrs
from svirt.domain import parse_domain
from svirt.errors import SecurityError
from svirt.host.ids import resolve_gid, resolve_uid
from svirt.security.dac import DACDriver, format_ids, parse_ids
from svirt.security.manager import SecurityManager

QEMU_UID = resolve_uid("svirt-qemu")
QEMU_GID = resolve_gid("svirt-qemu")


def test_identity_resolution() -> None:
    assert parse_ids("+0:+0") == (0, 0)
    assert parse_ids("svirt-qemu:svirt-qemu") == (QEMU_UID, QEMU_GID)
    assert parse_ids("4321:+8765") == (4321, 8765)  # no such user: number
    assert parse_ids("root:0") == (0, 0)
    with pytest.raises(SecurityError, match="Failed to parse uid and gid from 'qemu'"):
        parse_ids("qemu")
    with pytest.raises(SecurityError, match="Failed to parse uid and gid from 'nosuchuser:0'"):
        parse_ids("nosuchuser:0")
    assert format_ids(107, 108) == "+107:+108"


def test_chown_and_restore_remembered_owner(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=2345)
    before = state(img)
    mgr = SecurityManager(config(tmp_path))
    d = parse_domain(domain_xml("vm", [disk_xml(img, "vda")]))
    live = mgr.label_domain(d)
    assert live.seclabel("dac").label == format_ids(QEMU_UID, QEMU_GID)  # type: ignore[union-attr]
    st = os.stat(img)
    assert (st.st_uid, st.st_gid) == (QEMU_UID, QEMU_GID)
    assert os.getxattr(img, "trusted.libvirt.security.dac") == b"+1234:+2345"
    assert os.getxattr(img, "trusted.libvirt.security.ref_dac") == b"1"
    mgr.restore_domain("vm")
    assert state(img) == before
    assert svirt_xattrs(img) == []


def test_readonly_shareable_backing_chowned_not_restored(tmp_path: Path) -> None:
    ro = make_file(tmp_path / "ro.iso")
    sh = make_file(tmp_path / "sh.img")
    base = make_file(tmp_path / "base.img")
    top = make_file(tmp_path / "top.img")
    chain = (
        f"<disk type='file'><source file='{top}'/><backingStore type='file'><format "
        f"type='raw'/><source file='{base}'/></backingStore><target dev='vdc'/></disk>"
    )
    mgr = SecurityManager(config(tmp_path))
    d = parse_domain(
        domain_xml(
            "vm", [disk_xml(ro, "hda", readonly=True), disk_xml(sh, "vdb", shareable=True), chain]
        )
    )
    mgr.label_domain(d)
    for p in (ro, sh, base, top):  # all layers are chowned; DAC has no read-only case
        assert os.stat(p).st_uid == QEMU_UID
        assert "trusted.libvirt.security.ref_dac" not in os.listxattr(p) or p == top
    mgr.restore_domain("vm")
    assert os.stat(top).st_uid == 0
    for p in (ro, sh, base):  # never restored (other VMs may use them)
        assert os.stat(p).st_uid == QEMU_UID


def test_already_accessible_is_not_chowned(tmp_path: Path) -> None:
    """The RFC's DAC relabel: a world-readable ISO is left alone; a 0666 image too."""
    iso = make_file(tmp_path / "public.iso", uid=1000, gid=1000, mode=0o644)
    rw = make_file(tmp_path / "open.img", uid=1000, gid=1000, mode=0o666)
    before_iso, before_rw = state(iso), state(rw)
    mgr = SecurityManager(config(tmp_path))
    d = parse_domain(
        domain_xml("vm", [disk_xml(iso, "hda", readonly=True, device="cdrom"), disk_xml(rw, "vda")])
    )
    mgr.label_domain(d)
    assert os.stat(iso).st_uid == 1000 and os.stat(rw).st_uid == 1000
    # the r/w image's owner is still remembered, so restore knows what to put back
    assert os.getxattr(rw, "trusted.libvirt.security.dac") == b"+1000:+1000"
    mgr.restore_domain("vm")
    assert state(iso)["uid"] == before_iso["uid"]
    assert state(rw)["uid"] == 1000 and svirt_xattrs(rw) == []
    assert state(rw)["xattrs"] == before_rw["xattrs"]


def test_shared_file_refcount_and_in_use(tmp_path: Path) -> None:
    img = make_file(tmp_path / "s.img", uid=1234, gid=1234)
    cfg = config(tmp_path)
    mgr = SecurityManager(cfg)
    # Two domains with the same DAC identity share the file (SELinux relabel off for it).
    sl = "<seclabel model='selinux' relabel='no'/>"
    for name in ("a", "b"):
        mgr.label_domain(parse_domain(domain_xml(name, [disk_xml(img, "vda", extra=sl)])))
    assert os.getxattr(img, "trusted.libvirt.security.ref_dac") == b"2"
    # A third with another identity is refused with libvirt's text; the state is intact.
    other = (
        "<seclabel type='static' model='dac' relabel='yes'><label>+4000:+4000</label></seclabel>"
    )
    with pytest.raises(
        SecurityError,
        match=(f"Setting different DAC user or group on {img} which is already in use"),
    ):
        mgr.label_domain(
            parse_domain(domain_xml("c", [disk_xml(img, "vda", extra=sl)], seclabels=other))
        )
    assert os.getxattr(img, "trusted.libvirt.security.ref_dac") == b"2"
    assert os.getxattr(img, "trusted.libvirt.security.dac") == b"+1234:+1234"
    mgr.restore_domain("a")
    assert os.stat(img).st_uid == QEMU_UID  # still in use by b
    assert os.getxattr(img, "trusted.libvirt.security.ref_dac") == b"1"
    mgr.restore_domain("b")
    assert (os.stat(img).st_uid, os.stat(img).st_gid) == (1234, 1234)
    assert svirt_xattrs(img) == []


def test_dynamic_ownership_off(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    mgr = SecurityManager(config(tmp_path, dynamic_ownership=False))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
    assert os.stat(img).st_uid == 1234
    assert "trusted.libvirt.security.dac" not in os.listxattr(img)
    mgr.restore_domain("vm")


def test_remember_owner_off_restores_root(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    mgr = SecurityManager(config(tmp_path, remember_owner=False))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
    assert svirt_xattrs(img) == []
    mgr.restore_domain("vm")
    st = os.stat(img)
    assert (st.st_uid, st.st_gid) == (0, 0)  # libvirt: nothing remembered → root:root


def test_not_remembered_and_not_ours_is_left_alone(tmp_path: Path) -> None:
    """libvirt chowns to root:root whenever nothing is remembered; svirt only does so for
    a file that QEMU's identity owns."""
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    cfg = config(tmp_path)
    drv = DACDriver(cfg)
    d = parse_domain(domain_xml("vm", [disk_xml(img, "vda")]))
    from svirt.domain.resources import domain_resources

    mgr = SecurityManager(cfg)
    live = mgr.gen_labels(d)
    for op in drv.restore_ops(live, list(domain_resources(live))):
        drv.apply(op)
    assert os.stat(img).st_uid == 1234


def test_per_disk_dac_seclabels(tmp_path: Path) -> None:
    keep = make_file(tmp_path / "keep.img", uid=1234, gid=1234)
    custom = make_file(tmp_path / "custom.img", uid=1234, gid=1234)
    mgr = SecurityManager(config(tmp_path))
    d = parse_domain(
        domain_xml(
            "vm",
            [
                disk_xml(keep, "vda", extra="<seclabel model='dac' relabel='no'/>"),
                disk_xml(
                    custom,
                    "vdb",
                    extra="<seclabel model='dac'><label>+5000:+5001</label></seclabel>",
                ),
            ],
        )
    )
    mgr.label_domain(d)
    assert os.stat(keep).st_uid == 1234
    assert (os.stat(custom).st_uid, os.stat(custom).st_gid) == (5000, 5001)
    mgr.restore_domain("vm")
    assert os.stat(custom).st_uid == 1234


def test_static_dac_label_without_label_is_refused(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    from svirt.domain.model import Seclabel, SeclabelType

    drv = mgr.drivers["dac"]
    d = parse_domain(domain_xml("vm", []))
    with pytest.raises(
        SecurityError, match="missing label for static security driver in domain vm"
    ):
        drv.gen_label(d, Seclabel(SeclabelType.STATIC, "dac", True))


def test_qemu_user_exists() -> None:
    # scripts/setup.sh creates it; the tests above depend on it being a real user.
    assert pwd.getpwnam("svirt-qemu").pw_uid == QEMU_UID
