"""relabel='optional' (the libvir-list RFC, seed 002): read-only and shareable media keep
their label when the real policy says the VM's process label can already use it, and are
relabelled as usual otherwise. Real files, real xattrs, the installed reference policy."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from fsutil import config, domain_xml, make_file, svirt_xattrs
from svirt.conf import Config
from svirt.domain import parse_domain
from svirt.errors import XMLError
from svirt.policy.oracle import PolicyOracle
from svirt.security.manager import SecurityManager
from svirt.security.selinux import SELinuxDriver, shared_policy_oracle

PUBLIC = "system_u:object_r:public_content_t:s0"
HOME = "unconfined_u:object_r:user_home_t:s0"
CONTENT = "system_u:object_r:virt_content_t:s0"
SHARED = "system_u:object_r:svirt_image_t:s0"
REMOVABLE = "system_u:object_r:removable_device_t:s0"
OPTIONAL = "<seclabel model='selinux' relabel='optional'/>"


def label(path: Path) -> str:
    return os.getxattr(path, "security.selinux").rstrip(b"\0").decode()


def cdrom(path: Path, target: str, extra: str = OPTIONAL) -> str:
    return (
        f"<disk type='file' device='cdrom'><source file='{path}'>{extra}</source>"
        f"<target dev='{target}' bus='ide'/><readonly/></disk>"
    )


def shareable(path: Path, target: str) -> str:
    return (
        f"<disk type='file' device='disk'><source file='{path}'>{OPTIONAL}</source>"
        f"<target dev='{target}'/><shareable/></disk>"
    )


def test_public_iso_keeps_its_label_home_iso_is_relabelled(
    selinux_config: Config, tmp_path: Path
) -> None:
    public = make_file(tmp_path / "public.iso", label=PUBLIC, mode=0o644)
    home = make_file(tmp_path / "home.iso", label=HOME, mode=0o644)
    dom = parse_domain(domain_xml("media", [cdrom(public, "hdc"), cdrom(home, "hdd")]))
    mgr = SecurityManager(selinux_config)
    _, plan = mgr.dry_run(dom)
    assert {p.op.path for p in plan if p.op.driver == "selinux"} == {str(home)}

    mgr.label_domain(dom)

    # svirt_t may read public_content_t: the ISO is left exactly as it was.
    assert label(public) == PUBLIC
    assert svirt_xattrs(public) == []
    # ... but not user_home_t: that one gets the content label, as without 'optional'.
    assert label(home) == CONTENT
    # Read-only media are never remembered, whichever way they went.
    assert svirt_xattrs(home) == []
    # Once relabelled, the content label is readable too: a second plan keeps both.
    assert [op for op in mgr.set_ops(mgr.gen_labels(dom)) if op.driver == "selinux"] == []

    mgr.restore_domain("media")
    # Restore leaves read-only media alone (libvirt's rule), so the skipped one was
    # neither remembered nor restored: nothing on it changed at any point.
    assert label(public) == PUBLIC
    assert svirt_xattrs(public) == []
    assert label(home) == CONTENT


def test_without_optional_the_public_iso_is_relabelled(
    selinux_config: Config, tmp_path: Path
) -> None:
    public = make_file(tmp_path / "public.iso", label=PUBLIC, mode=0o644)
    dom = parse_domain(domain_xml("plain", [cdrom(public, "hdc", extra="")]))
    SecurityManager(selinux_config).label_domain(dom)
    assert label(public) == CONTENT


def test_shareable_needs_read_write(selinux_config: Config, tmp_path: Path) -> None:
    # public_content_t is readable but not writable by svirt_t: a shareable (writable)
    # disk there is relabelled; one already labelled svirt_image_t:s0 is kept.
    pub = make_file(tmp_path / "pub.img", label=PUBLIC)
    ok = make_file(tmp_path / "ok.img", label=SHARED)
    os.setxattr(ok, "user.marker", b"1")  # the xattr set must stay exactly the same
    before = sorted(os.listxattr(ok))
    dom = parse_domain(domain_xml("shared", [shareable(pub, "vda"), shareable(ok, "vdb")]))
    SecurityManager(selinux_config).label_domain(dom)
    assert label(pub) == SHARED
    assert label(ok) == SHARED
    assert sorted(os.listxattr(ok)) == before


def test_block_device_node_uses_its_class(selinux_config: Config, tmp_path: Path) -> None:
    # The RFC's /dev/sr0 case: svirt_t may read a removable_device_t *blk_file* (not a
    # plain file of that type), so the class must come from the node's mode.
    node = tmp_path / "sr0"
    os.mknod(node, 0o660 | stat.S_IFBLK, os.makedev(11, 0))
    os.setxattr(node, "security.selinux", REMOVABLE.encode() + b"\0")
    plain = make_file(tmp_path / "sr0.img", label=REMOVABLE, mode=0o644)
    disk = (
        f"<disk type='block' device='cdrom'><source dev='{node}'>{OPTIONAL}</source>"
        "<target dev='hdc' bus='ide'/><readonly/></disk>"
    )
    dom = parse_domain(domain_xml("sr0", [disk, cdrom(plain, "hdd")]))
    SecurityManager(selinux_config).label_domain(dom)
    assert label(node) == REMOVABLE
    assert label(plain) == CONTENT


def test_backing_chain_inherits_optional_from_the_top(
    selinux_config: Config, tmp_path: Path
) -> None:
    top = make_file(tmp_path / "top.qcow2", label=PUBLIC, mode=0o644)
    base = make_file(tmp_path / "base.qcow2", label=HOME, mode=0o644)
    disk = (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{top}'>{OPTIONAL}</source>"
        f"<backingStore type='file'><format type='raw'/><source file='{base}'/>"
        "</backingStore><target dev='vda'/><readonly/></disk>"
    )
    SecurityManager(selinux_config).label_domain(parse_domain(domain_xml("chain", [disk])))
    assert label(top) == PUBLIC
    assert label(base) == CONTENT


def test_private_writable_disk_is_refused_by_the_parser(tmp_path: Path) -> None:
    disk = f"<disk type='file'><source file='{tmp_path / 'x'}'>{OPTIONAL}</source>"
    with pytest.raises(XMLError, match="break isolation"):
        parse_domain(domain_xml("bad", [disk + "<target dev='vda'/></disk>"]))


def test_no_policy_relabels_as_usual_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, policy_path=str(tmp_path / "no-such-policy.33"))
    public = make_file(tmp_path / "public.iso", label=PUBLIC, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="svirt.security.selinux"):
        SecurityManager(cfg).label_domain(parse_domain(domain_xml("np", [cdrom(public, "hdc")])))
    assert label(public) == CONTENT
    assert any(
        "relabel='optional' on disk hdc: cannot ask the policy" in r.getMessage()
        and "relabelling" in r.getMessage()
        for r in caplog.records
    )


def test_injected_oracle_is_used_and_the_policy_is_loaded_once(
    selinux_config: Config, tmp_path: Path
) -> None:
    public = make_file(tmp_path / "public.iso", label=PUBLIC, mode=0o644)
    dom = parse_domain(domain_xml("inj", [cdrom(public, "hdc")]))
    oracle = PolicyOracle()
    mgr = SecurityManager(selinux_config)
    drv = mgr.selinux
    assert drv is not None
    drv.bind_oracle(oracle)
    live = mgr.gen_labels(dom)
    assert str(public) not in {op.path for op in mgr.set_ops(live) if op.driver == "selinux"}
    assert oracle.cache_info().misses >= 1
    assert drv.policy_oracle() is oracle

    # Without injection every driver in the process shares one oracle per policy file.
    a = SELinuxDriver(selinux_config)
    b = SELinuxDriver(selinux_config)
    assert a.policy_oracle() is b.policy_oracle() is shared_policy_oracle(None)


def test_domain_level_optional_applies_to_its_media(selinux_config: Config, tmp_path: Path) -> None:
    """<seclabel type='dynamic' model='selinux' relabel='optional'/>: every read-only or
    shareable medium of the domain is treated as relabel='optional'; private disks are
    relabelled as always."""
    public = make_file(tmp_path / "public.iso", label=PUBLIC, mode=0o644)
    private = make_file(tmp_path / "disk.img")
    xml = (
        "<domain type='kvm'><name>gentle</name>"
        "<seclabel type='dynamic' model='selinux' relabel='optional'/><devices>"
        + cdrom(public, "hdc", extra="")
        + f"<disk type='file'><source file='{private}'/><target dev='vda'/></disk>"
        "</devices></domain>"
    )
    dom = parse_domain(xml)
    assert dom.seclabels[0].relabel and dom.seclabels[0].relabel_optional
    mgr = SecurityManager(selinux_config)
    live = mgr.label_domain(dom)
    assert label(public) == PUBLIC
    assert label(private) == live.seclabel("selinux").imagelabel  # type: ignore[union-attr]
    from svirt.domain import format_domain

    assert "relabel='optional'" in format_domain(live)
    mgr.restore_domain("gentle")
    assert label(public) == PUBLIC and svirt_xattrs(private) == []


def test_domain_level_optional_is_not_for_none(tmp_path: Path) -> None:
    with pytest.raises(XMLError, match="not compatible with 'none' label type"):
        parse_domain(
            "<domain type='kvm'><name>x</name>"
            "<seclabel type='none' model='selinux' relabel='optional'/></domain>"
        )
