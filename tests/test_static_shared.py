"""Shared static labels (issue 14, item 5): real QEMU, two domains with the same
``<seclabel type='static'>``, as seed 001 describes ("possible to configure two or more
VMs with the same security context so that they can share resources") and libvirt allows.

Both start, write one console log file together (two QEMUs cannot both hold a disk
image's write lock), and stop; the file's remembered original is refcounted (2 while
both run, 1 after the first stops) and put back by the last. A
dynamic domain beside them never gets their level, and a static label equal to a dynamic
domain's level is refused. ``verify``, with the real policy, lists the two as sharing by
configuration, not as an isolation failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import config, image_dir, make_file, state, stop_all, svirt_xattrs
from svirt import Host
from svirt.conf import Config
from svirt.context import MLSRange
from svirt.domain import parse_domain
from svirt.errors import SvirtError
from svirt.host.ids import resolve_uid
from svirt.launch.lifecycle import qemu_alive, start_domain, stop_domain
from svirt.policy import PolicyOracle
from svirt.policy.verify import verify
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore

pytestmark = pytest.mark.qemu

POLICY = Path("/etc/selinux/default/policy/policy.33")
QEMU_UID = resolve_uid("svirt-qemu")
STATIC = "system_u:system_r:svirt_t:s0:c1022,c1023"  # the seed's static label
IMAGE = "system_u:object_r:svirt_image_t:s0:c1022,c1023"
REF = "trusted.libvirt.security.ref_selinux"
REMEMBERED = "trusted.libvirt.security.selinux"


def vm_xml(name: str, disks: list[Path], seclabel: str = "", serial: Path | None = None) -> str:
    devices = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{p}'/><target dev='vd{chr(ord('a') + i)}' bus='virtio'/></disk>"
        for i, p in enumerate(disks)
    )
    if serial is not None:
        devices += f"<serial type='file'><source path='{serial}'/><target port='0'/></serial>"
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>{seclabel}"
        f"<devices>{devices}</devices></domain>"
    )


def static(label: str = STATIC) -> str:
    return (
        f"<seclabel type='static' model='selinux' relabel='yes'><label>{label}</label></seclabel>"
    )


def image(tmp: Path, name: str) -> Path:
    p = make_file(tmp / name, uid=1001, gid=1001)
    os.truncate(p, 1 << 20)
    return p


def label_of(path: Path) -> str:
    return os.getxattr(path, "security.selinux").rstrip(b"\0").decode()


def ref(path: Path) -> int:
    return int(os.getxattr(path, REF).decode())


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    with image_dir("svirt-static-") as d:
        yield d


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[Config]:
    c = config(tmp_path)
    try:
        yield c
    finally:
        stop_all(c)


def test_equal_static_labels_run_side_by_side_and_restore(cfg: Config, tmp_path: Path) -> None:
    common, own_a, own_b = (image(tmp_path, n) for n in ("console.log", "a.img", "b.img"))
    own_d = image(tmp_path, "d.img")
    before = {p: state(p) for p in (common, own_a, own_b, own_d)}

    ra = start_domain(cfg, parse_domain(vm_xml("a", [own_a], static(), common)))
    rb = start_domain(cfg, parse_domain(vm_xml("b", [own_b], static(), common)))
    rd = start_domain(cfg, parse_domain(vm_xml("d", [own_d])))
    store = DomainStore(cfg.state_dir)
    for name in ("a", "b", "d"):
        rec = store.read(name)
        assert rec is not None and qemu_alive(rec), name
    assert ra.label == rb.label == STATIC and ra.imagelabel == rb.imagelabel == IMAGE
    assert rd.label is not None and rd.label.split(":", 3)[3] != "s0:c1022,c1023"
    # One file, two users of one label: one remembered original, counted twice.
    for p in (common, own_a, own_b):
        assert label_of(p) == IMAGE and os.stat(p).st_uid == QEMU_UID
    assert ref(common) == 2 and ref(own_a) == 1
    remembered = os.getxattr(common, REMEMBERED)
    mgr = SecurityManager(cfg)
    assert mgr.selinux is not None
    assert mgr.selinux.ledger.levels_of("a") == mgr.selinux.ledger.levels_of("b")
    assert Host(cfg).sharers(STATIC) == ("a", "b") == Host(cfg).sharers("s0:c1022,c1023")

    # verify, from the real policy: a and b share by configuration; d is kept apart.
    report = verify(cfg, PolicyOracle(POLICY))
    assert report.findings == (), [f.explanation for f in report.findings]
    (group,) = report.shared_labels
    assert group.label == STATIC and group.domains == ("a", "b")
    shared = {(s.resource.domain, s.resource.path): s for s in group.resources}
    assert shared[("a", str(own_a))].writers == ("b",)
    assert shared[("b", str(common))].readers == ("a",)
    pairs = {(p.subject, p.target): p for p in report.pairs or ()}
    assert pairs[("a", "b")].shared_label == STATIC and pairs[("a", "b")].as_configured
    assert "shared by configuration" in pairs[("b", "a")].describe()
    assert pairs[("a", "d")].shared_label is None
    assert pairs[("a", "d")].selinux_policy_denies  # the policy keeps d apart

    # The first to stop leaves the shared file to the other, one reference fewer.
    stop_domain(cfg, "a", force=True)
    assert state(own_a) == before[own_a] and svirt_xattrs(own_a) == []
    assert label_of(common) == IMAGE and ref(common) == 1
    assert os.getxattr(common, REMEMBERED) == remembered
    assert os.stat(common).st_uid == QEMU_UID
    rec_b = store.read("b")
    assert rec_b is not None and qemu_alive(rec_b)
    assert mgr.selinux.ledger.levels_of("b") == [str(MLSRange.parse("s0:c1022,c1023"))]

    # The last one puts everything back as it was.
    stop_domain(cfg, "b", force=True)
    stop_domain(cfg, "d", force=True)
    for p in (common, own_a, own_b, own_d):
        assert state(p) == before[p], p
    assert list(mgr.selinux.ledger.reservations()) == []


def test_static_label_equal_to_a_dynamic_level_is_refused(cfg: Config, tmp_path: Path) -> None:
    own_d, own_s = image(tmp_path, "d.img"), image(tmp_path, "s.img")
    untouched = state(own_s)
    rd = start_domain(cfg, parse_domain(vm_xml("dyn", [own_d])))
    assert rd.label is not None
    level = rd.label.split(":", 3)[3]
    with pytest.raises(SvirtError) as info:
        start_domain(cfg, parse_domain(vm_xml("st", [own_s], static(rd.label))))
    assert (
        f"static label {rd.label} has the MCS level {level} that running domain dyn holds as "
        "its own dynamic level" in str(info.value)
    )
    assert state(own_s) == untouched
    assert DomainStore(cfg.state_dir).read("st") is None
    stop_domain(cfg, "dyn", force=True)


def test_verify_cli_lists_sharing_by_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Live XMLs in libvirt's status form with this test's pid (as tests/test_verify.py):
    two static domains with one label are sharing, exit 0; a dynamic domain with the
    same categories beside a static one is still an isolation failure, exit 1."""
    from svirt.cli.main import main
    from test_verify import disk, live_xml

    state_dir = tmp_path / "state"
    (state_dir / "domains").mkdir(parents=True)
    conf = tmp_path / "svirt.conf"
    conf.write_text(f'state_dir = "{state_dir}"\nlibvirt_run_dir = "{tmp_path}/run"\n')
    seclabel = (
        f"<seclabel type='static' model='selinux' relabel='yes'><label>{STATIC}</label>"
        f"<imagelabel>{IMAGE}</imagelabel></seclabel>"
    )
    for name in ("s1", "s2"):
        img = make_file(tmp_path / f"{name}.img", label=IMAGE)
        xml = live_xml(name, None, disk(img, "vda"), seclabel=seclabel)
        (state_dir / "domains" / f"{name}.xml").write_text(xml)
    args = ["verify", "--config", str(conf), "--policy", str(POLICY)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"shared by configuration (one static label {STATIC}): s1, s2" in out
    assert f"  s1 disk vda {tmp_path}/s1.img: usable by s2" in out
    assert "SELinux policy: isolation OK" in out and "BROKEN" not in out
    assert "except those sharing a static label by configuration" in out
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["isolated"] is True and doc["findings"] == []
    (group,) = doc["shared_labels"]
    assert group["label"] == STATIC and group["domains"] == ["s1", "s2"]
    assert {p["shared_label"] for p in doc["pairs"]} == {STATIC}

    # A dynamic domain that happens to have the same level never agreed to share.
    img = make_file(tmp_path / "d.img", label=IMAGE)
    xml = live_xml("d", "c1022,c1023", disk(img, "vda"))
    (state_dir / "domains" / "d.xml").write_text(xml)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "isolation BROKEN" in out and "s1, s2" in out
