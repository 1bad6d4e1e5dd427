"""DAC by POSIX ACL (dac_mode = "acl"): refcounted named-user entries, exact round trip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fsutil import config, disk_xml, domain_xml, getfacl, make_file, state, svirt_xattrs
from svirt.domain import parse_domain
from svirt.host.acl import Acl, can_access, read_acl
from svirt.host.ids import resolve_uid
from svirt.security.manager import SecurityManager

QEMU_UID = resolve_uid("svirt-qemu")


def test_acl_codec_round_trip(tmp_path: Path) -> None:
    f = make_file(tmp_path / "f")
    subprocess.run(["setfacl", "-m", "u:4242:r,g:4343:rw", str(f)], check=True)
    acl, stored = read_acl(str(f))
    assert stored
    assert acl.named_user(4242) is not None and acl.named_user(4242).perm == 4  # type: ignore[union-attr]
    assert Acl.decode(acl.encode()) == acl
    assert os.getxattr(f, "system.posix_acl_access") == acl.encode()


def test_can_access_follows_posix_rules(tmp_path: Path) -> None:
    f = make_file(tmp_path / "f", uid=1000, gid=1000, mode=0o640)
    st = os.stat(f)
    acl, _ = read_acl(str(f))
    assert can_access(st, acl, 1000, frozenset({1000}), 6)
    assert can_access(st, acl, 2000, frozenset({1000}), 4)  # group read
    assert not can_access(st, acl, 2000, frozenset({1000}), 6)
    assert not can_access(st, acl, 3000, frozenset({3000}), 4)
    subprocess.run(["setfacl", "-m", "u:3000:rw,m::r", str(f)], check=True)
    acl, _ = read_acl(str(f))
    assert can_access(os.stat(f), acl, 3000, frozenset(), 4)
    assert not can_access(os.stat(f), acl, 3000, frozenset(), 6)  # the mask limits it


def test_round_trip_leaves_acl_identical(tmp_path: Path) -> None:
    d = tmp_path / "images"
    d.mkdir(mode=0o700)
    img = make_file(d / "a.img", uid=1234, gid=1234, mode=0o640)
    ro = make_file(d / "ro.iso", uid=1234, gid=1234, mode=0o600)
    subprocess.run(["setfacl", "-m", "u:4242:r", str(ro)], check=True)  # a pre-existing ACL
    before = {p: (getfacl(p), state(p)) for p in (d, img, ro)}
    mgr = SecurityManager(config(tmp_path, dac_mode="acl"))
    dom = parse_domain(domain_xml("vm", [disk_xml(img, "vda"), disk_xml(ro, "hda", readonly=True)]))
    mgr.label_domain(dom)
    assert f"user:{QEMU_UID}:rw-" in getfacl(img)
    assert f"user:{QEMU_UID}:r--" in getfacl(ro)
    assert f"user:{QEMU_UID}:--x" in getfacl(d)  # search on the directory it needs
    assert os.stat(img).st_uid == 1234  # no chown in ACL mode
    mgr.restore_domain("vm")
    for p, (facl, st) in before.items():
        assert getfacl(p) == facl, p
        assert svirt_xattrs(p) == []
        if p != ro:  # read-only media keep virt_content_t (never restored, as libvirt)
            assert state(p) == st, p


def test_two_domains_share_a_file(tmp_path: Path) -> None:
    img = make_file(tmp_path / "s.img", uid=1234, gid=1234, mode=0o600)
    tmp_path.chmod(0o755)
    before = getfacl(img)
    mgr = SecurityManager(config(tmp_path, dac_mode="acl"))
    sl = "<seclabel model='selinux' relabel='no'/>"
    for name in ("a", "b"):
        mgr.label_domain(parse_domain(domain_xml(name, [disk_xml(img, "vda", extra=sl)])))
    ref = os.getxattr(img, f"trusted.svirt.security.acl_{QEMU_UID}").split()[0]
    assert ref == b"2"
    mgr.restore_domain("a")
    assert f"user:{QEMU_UID}:rw-" in getfacl(img)  # b still needs it
    mgr.restore_domain("b")
    assert getfacl(img) == before
    assert svirt_xattrs(img) == []


def test_accessible_file_is_left_alone(tmp_path: Path) -> None:
    iso = make_file(tmp_path / "pub.iso", uid=1000, gid=1000, mode=0o644)
    tmp_path.chmod(0o755)
    before = state(iso)
    mgr = SecurityManager(config(tmp_path, dac_mode="acl"))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(iso, "hda", readonly=True)])))
    assert "system.posix_acl_access" not in os.listxattr(iso)
    mgr.restore_domain("vm")
    assert state(iso)["acl"] == before["acl"]


def test_no_acl_support_falls_back_to_chown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ramfs has neither POSIX ACLs nor xattrs: svirt chowns instead and says so; with no
    way to remember the owner, stop gives it back to root:root, as libvirt does."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], check=True)
    try:
        mnt.chmod(0o755)
        img = make_file(mnt / "a.img", uid=1234, gid=1234, label=None)
        mgr = SecurityManager(config(tmp_path, dac_mode="acl"))
        dom = parse_domain(
            domain_xml(
                "vm", [disk_xml(img, "vda", extra="<seclabel model='selinux' relabel='no'/>")]
            )
        )
        mgr.label_domain(dom)
        assert os.stat(img).st_uid == QEMU_UID
        assert "has no POSIX ACL or xattr support: falling back to chown" in caplog.text
        mgr.restore_domain("vm")
        assert (os.stat(img).st_uid, os.stat(img).st_gid) == (0, 0)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_acl_mode_never_widens_the_mask_for_others(tmp_path: Path) -> None:
    """uid 1234 has rw limited to r by the mask: adding QEMU's rw entry would raise the
    mask and let 1234 write, so svirt chowns instead (and puts everything back)."""
    tmp_path.chmod(0o755)
    img = make_file(tmp_path / "a.img", uid=4321, gid=4321, mode=0o640)
    subprocess.run(["setfacl", "-m", "u:1234:rw,m::r", str(img)], check=True)
    before = getfacl(img)
    mgr = SecurityManager(config(tmp_path, dac_mode="acl"))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
    assert "mask::r--" in getfacl(img)
    assert os.stat(img).st_uid == QEMU_UID  # chowned instead
    mgr.restore_domain("vm")
    assert getfacl(img) == before


def test_two_qemu_users_share_a_file_and_leave_no_mask(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    img = make_file(tmp_path / "s.img", uid=4321, gid=4321, mode=0o640)
    before = (getfacl(img), oct(os.stat(img).st_mode))
    keep = "<seclabel model='selinux' relabel='no'/>"
    mgr = SecurityManager(config(tmp_path, dac_mode="acl"))
    other = (
        "<seclabel type='static' model='dac' relabel='yes'><label>+5555:+5555</label></seclabel>"
    )
    mgr.label_domain(parse_domain(domain_xml("a", [disk_xml(img, "vda", extra=keep)])))
    mgr.label_domain(
        parse_domain(domain_xml("b", [disk_xml(img, "vda", extra=keep)], seclabels=other))
    )
    assert "user:5555:rw-" in getfacl(img)
    mgr.restore_domain("a")
    mgr.restore_domain("b")
    assert (getfacl(img), oct(os.stat(img).st_mode)) == before


def _label_in(tmp: str, name: str, img: str) -> None:
    mgr = SecurityManager(config(Path(tmp), dac_mode="acl"))
    keep = "<seclabel model='selinux' relabel='no'/>"
    mgr.label_domain(parse_domain(domain_xml(name, [disk_xml(img, "vda", extra=keep)])))


def test_concurrent_acl_grants_on_one_directory_are_counted_exactly(tmp_path: Path) -> None:
    """Directory ACLs are read-modify-written; flock on the directory serialises them."""
    import multiprocessing

    d = tmp_path / "images"
    d.mkdir(mode=0o700)
    tmp_path.chmod(0o755)
    imgs = [make_file(d / f"{i}.img", uid=1234, gid=1234) for i in range(4)]
    before = getfacl(d)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_label_in, args=(str(tmp_path), f"vm{i}", str(p)))
        for i, p in enumerate(imgs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert os.getxattr(d, f"trusted.svirt.security.acl_{QEMU_UID}").split()[0] == b"4"
    mgr = SecurityManager(config(tmp_path, dac_mode="acl"))
    for i in range(4):
        mgr.restore_domain(f"vm{i}")
    assert getfacl(d) == before
    assert svirt_xattrs(d) == []
