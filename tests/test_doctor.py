"""svirt doctor on real files with real xattrs, written the way libvirt writes them
(platform.md: libvirt 9.0 on this machine; spec §7.1: the 5.x ``<host-uuid>-<boot>``
timestamp), with processes really holding files, svirt's own labelled domains, and
libvirt status XML naming a live process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fsutil import config, disk_xml, domain_xml, make_file
from svirt.cli.main import main
from svirt.conf import Config
from svirt.doctor import Kind, RepairKind, examine, recover
from svirt.domain import parse_domain
from svirt.security.manager import SecurityManager
from svirt.security.remember import boot_time

ORIGINAL = "system_u:object_r:virt_image_t:s0"
OLD_BOOT = "1749811180"  # seed 000's timestamp: an earlier boot
HOST_UUID = "6a1e9c8e-4b7d-4c36-9d52-3f0c0a6d8e11"
LV = "trusted.libvirt.security."


def libvirt_xattrs(
    path: Path,
    *,
    ref: str = "1",
    timestamp: str | None = None,
    label: str = ORIGINAL,
    owner: str = "+0:+0",
    vm_label: str = "system_u:object_r:svirt_image_t:s0:c249,c396",
) -> None:
    """What libvirt leaves on a running VM's writable disk (seed 000's getfattr)."""
    ts = timestamp if timestamp is not None else str(boot_time())
    os.setxattr(path, "security.selinux", vm_label.encode() + b"\0")
    for name, value in (
        ("dac", owner),
        ("ref_dac", ref),
        ("ref_selinux", ref),
        ("selinux", label),
        ("timestamp_dac", ts),
        ("timestamp_selinux", ts),
    ):
        os.setxattr(path, LV + name, value.encode())
    os.chown(path, 107, 107)


def xattrs(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith("trusted.")}


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return config(
        tmp_path,
        images_dirs=[str(tmp_path / "images")],
        libvirt_run_dir=str(tmp_path / "libvirt"),
    )


def kinds(cfg: Config, *args: str) -> list[tuple[Kind, str | None]]:
    return [(f.kind, f.family) for f in examine(cfg, args).findings]


def test_libvirt9_xattrs_nobody_uses(cfg: Config, tmp_path: Path) -> None:
    # libvirtd killed while the VM ran, VM gone, no reboot: timestamps are this boot, so
    # libvirt never notices; the next start fails with "already in use".
    img = make_file(tmp_path / "vm.qcow2")
    libvirt_xattrs(img)
    report = examine(cfg, [str(img)])
    by_family = {f.family: f for f in report.findings if f.kind is Kind.REFCOUNT}
    assert set(by_family) == {"selinux", "dac"}
    sel = by_family["selinux"]
    assert sel.path == str(img) and sel.repair is RepairKind.RESTORE
    assert "refcount 1 but nothing uses the file" in sel.evidence
    assert "no process holds it and no domain lists it" in sel.evidence
    assert sel.fix == f"svirt recover --apply {img}"
    assert sel.manual is not None and sel.manual.startswith(f"chcon {ORIGINAL} {img}")
    assert by_family["dac"].manual is not None
    assert by_family["dac"].manual.startswith(f"chown 0:0 {img}")
    # c249,c396 belong to no domain: the label is an orphan too.
    orphan = [f for f in report.findings if f.kind is Kind.ORPHAN_LABEL]
    assert len(orphan) == 1 and "c249,c396" in orphan[0].evidence


def test_old_boot_timestamp_both_forms(cfg: Config, tmp_path: Path) -> None:
    modern = make_file(tmp_path / "modern.img")
    old5 = make_file(tmp_path / "old5.img")
    libvirt_xattrs(modern, timestamp=OLD_BOOT)
    libvirt_xattrs(old5, timestamp=f"{HOST_UUID}-{OLD_BOOT}")
    for img in (modern, old5):
        found = [f for f in examine(cfg, [str(img)]).findings if f.kind is Kind.STALE_TIMESTAMP]
        assert {f.family for f in found} == {"selinux", "dac"}
        assert all(f"not this boot ({boot_time()})" in f.evidence for f in found)
        assert all(f.repair is RepairKind.RESTORE for f in found)


def test_uuid_form_of_this_boot_held_by_a_process_is_fine(
    cfg: Config, tmp_path: Path, holder: object
) -> None:
    img = make_file(tmp_path / "held.img")
    libvirt_xattrs(img, timestamp=f"{HOST_UUID}-{boot_time()}")
    pid = holder(img)  # type: ignore[operator]
    report = examine(cfg, [str(img)])
    [facts] = report.files
    assert [h.pid for h in facts.holders] == [pid]
    assert facts.users() == 1
    assert [f.kind for f in report.findings] == [Kind.ORPHAN_LABEL]  # only the label
    orphan = report.findings[0]
    assert f"pid {pid} (python" in orphan.evidence and orphan.repair is None


def test_refcount_above_holders(cfg: Config, tmp_path: Path, holder: object) -> None:
    img = make_file(tmp_path / "two.img")
    libvirt_xattrs(img, ref="2")
    pid = holder(img)  # type: ignore[operator]
    found = [f for f in examine(cfg, [str(img)]).findings if f.kind is Kind.REFCOUNT]
    assert {f.family for f in found} == {"selinux", "dac"}
    for f in found:
        assert "refcount 2 but 1 user: the original would never be restored" in f.evidence
        assert f"pid {pid}" in f.evidence
        assert f.repair is RepairKind.REFCOUNT
        assert f.manual == f"setfattr -n {LV}ref_{f.family} -v 1 {img}"


def test_stale_but_held_is_kept_and_refreshed(cfg: Config, tmp_path: Path, holder: object) -> None:
    img = make_file(tmp_path / "held-old.img")
    libvirt_xattrs(img, timestamp=OLD_BOOT)
    holder(img)  # type: ignore[operator]
    found = [f for f in examine(cfg, [str(img)]).findings if f.kind is Kind.STALE_TIMESTAMP]
    assert {f.repair for f in found} == {RepairKind.REFCOUNT}
    assert all("libvirt would discard this stale state" in f.evidence for f in found)


def test_malformed_refcount(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "bad.img")
    libvirt_xattrs(img, ref="x1")
    assert (Kind.REFCOUNT, "selinux") in kinds(cfg, str(img))
    [f] = [
        f
        for f in examine(cfg, [str(img)]).findings
        if (f.kind, f.family) == (Kind.REFCOUNT, "selinux")
    ]
    assert "malformed refcount 'x1'" in f.evidence


def test_orphan_label_without_remembered_original(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "chcon.img", label="system_u:object_r:svirt_image_t:s0:c7,c8")
    [f] = examine(cfg, [str(img)]).findings
    assert f.kind is Kind.ORPHAN_LABEL and f.repair is None
    assert f.fix == f"restorecon -v {img}"
    assert "no remembered original, so recover leaves it" in f.evidence


def test_svirt_labelled_domain_is_healthy(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    SecurityManager(cfg).label_domain(parse_domain(domain_xml("a", [disk_xml(img, "vda")])))
    report = examine(cfg, [str(img)])
    assert report.findings == ()
    [facts] = report.files
    assert [(d.name, d.origin, d.state) for d in facts.domains] == [("a", "svirt", "labelled")]
    # With no argument the domain's resources are examined too.
    assert str(img) in {f.path for f in examine(cfg).files}


def test_svirt_state_lost_is_found(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(domain_xml("gone", [disk_xml(img, "vda")])))
    mgr.store.remove("gone")  # the record and the ledger lost, the xattrs left
    assert mgr.selinux is not None
    mgr.selinux.ledger.release("gone")
    found = kinds(cfg, str(img))
    assert (Kind.REFCOUNT, "selinux") in found
    assert (Kind.REFCOUNT, "dac") in found
    assert (Kind.ORPHAN_LABEL, "selinux") in found


def test_images_dir_is_scanned_non_recursively(cfg: Config, tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    top = make_file(images / "top.img")
    deep = make_file(images / "sub" / "deep.img")
    for p in (top, deep):
        libvirt_xattrs(p, timestamp=OLD_BOOT)
    paths = {f.path for f in examine(cfg).findings}
    assert str(top) in paths and str(deep) not in paths
    # A directory given on the command line is read the same way.
    assert {f.path for f in examine(cfg, [str(images)]).findings} == {str(top)}


def test_libvirt_live_domain_is_a_user(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "lv.img")
    libvirt_xattrs(img, vm_label="system_u:object_r:svirt_image_t:s0:c249,c396")
    keeper = subprocess.Popen(["sleep", "600"])
    try:
        run = tmp_path / "libvirt"
        run.mkdir()
        (run / "ol8img.xml").write_text(
            f"<domstatus state='running' pid='{keeper.pid}'>"
            "<domain type='kvm' id='3'><name>ol8img</name><memory>65536</memory>"
            "<seclabel type='dynamic' model='selinux' relabel='yes'>"
            "<label>system_u:system_r:svirt_t:s0:c249,c396</label>"
            "<imagelabel>system_u:object_r:svirt_image_t:s0:c249,c396</imagelabel>"
            "</seclabel><seclabel type='dynamic' model='dac' relabel='yes'>"
            "<label>+107:+107</label><imagelabel>+107:+107</imagelabel></seclabel>"
            f"<devices><disk type='file' device='disk'><source file='{img}'/>"
            "<target dev='vda'/></disk></devices></domain></domstatus>"
        )
        report = examine(cfg, [str(img)])
        assert report.findings == ()  # listed by a running libvirt domain, label owned
        [facts] = report.files
        assert [(d.name, d.origin, d.uid) for d in facts.domains] == [("ol8img", "libvirt", 107)]
        # ... and `svirt doctor ol8img` examines that domain's files.
        assert [f.path for f in examine(cfg, ["ol8img"]).files] == [str(img)]
    finally:
        keeper.kill()
        keeper.wait()
    # Once that QEMU is gone while the status XML stays (libvirtd and QEMU killed), the
    # file is left to libvirtd, which restores it when it restarts (issue 12).
    assert set(kinds(cfg, str(img))) == {
        (Kind.LIBVIRT_PENDING, "selinux"),
        (Kind.LIBVIRT_PENDING, "dac"),
    }
    assert not any(a.done for a in recover(cfg, [str(img)], apply=True).actions)
    assert os.getxattr(img, "trusted.libvirt.security.ref_selinux") == b"1"
    # Without the status XML, the same xattrs are stale.
    (tmp_path / "libvirt" / "ol8img.xml").unlink()
    assert (Kind.REFCOUNT, "selinux") in kinds(cfg, str(img))


def test_dynamic_pair_equal_to_a_static_label(cfg: Config, tmp_path: Path) -> None:
    static = "system_u:system_r:svirt_t:s0:c392,c662"
    img = make_file(tmp_path / "s.img")
    SecurityManager(cfg).label_domain(
        parse_domain(
            domain_xml(
                "static",
                [disk_xml(img, "vda")],
                seclabels=f"<seclabel type='static' model='selinux' relabel='yes'>"
                f"<label>{static}</label></seclabel>",
            )
        )
    )
    keeper = subprocess.Popen(["sleep", "600"])
    try:
        run = tmp_path / "libvirt"
        run.mkdir()
        (run / "dyn.xml").write_text(
            f"<domstatus state='running' pid='{keeper.pid}'>"
            "<domain type='kvm' id='1'><name>dyn</name><memory>65536</memory>"
            "<seclabel type='dynamic' model='selinux' relabel='yes'>"
            "<label>system_u:system_r:svirt_t:s0:c392,c662</label>"
            "<imagelabel>system_u:object_r:svirt_image_t:s0:c392,c662</imagelabel>"
            "</seclabel></domain></domstatus>"
        )
        [clash] = [f for f in examine(cfg).findings if f.kind is Kind.CATEGORY_CLASH]
        assert clash.domains == ("dyn", "static")
        # Asked about one of the two by name, the clash is reported; about a file, not.
        assert clash in examine(cfg, ["static"]).findings
        assert clash not in examine(cfg, [str(img)]).findings
        assert clash.path is None
        assert "libvirt domain dyn runs with the dynamic label" in clash.evidence
        assert "equal to the static label of svirt domain static" in clash.evidence
        assert clash.fix == "virsh destroy dyn && virsh start dyn"
    finally:
        keeper.kill()
        keeper.wait()


def test_cli_doctor(cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{cfg.state_dir}"\n'
        f'images_dirs = ["{tmp_path / "images"}"]\nlibvirt_run_dir = "{cfg.libvirt_run_dir}"\n'
    )
    clean = make_file(tmp_path / "clean.img")
    assert main(["doctor", "--config", str(conf), str(clean)]) == 0
    assert "0 findings in 1 file checked" in capsys.readouterr().out

    img = make_file(tmp_path / "vm.img")
    libvirt_xattrs(img, timestamp=OLD_BOOT)
    assert main(["doctor", "--config", str(conf), str(img)]) == 1
    out = capsys.readouterr().out
    assert f"[stale-timestamp] remembered selinux: label {ORIGINAL}, refcount 1" in out
    assert f"fix: svirt recover --config {conf} --apply {img}" in out

    assert main(["doctor", "--config", str(conf), "--json", str(img)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {f["kind"] for f in data["findings"]} == {"stale-timestamp", "orphan-label"}
    assert data["files"][0]["remembered"][0]["timestamp"] == OLD_BOOT

    assert main(["doctor", "--config", str(conf), "no-such-vm"]) == 1
    assert capsys.readouterr().err == "error: no domain or file named 'no-such-vm'\n"


def _libvirt_dac_only(run: Path, name: str, pid: int, img: Path, flags: str = "") -> None:
    """A status XML as libvirt 9.0 writes it on our machines (SELinux off: DAC only)."""
    run.mkdir(exist_ok=True)
    (run / f"{name}.xml").write_text(
        f"<domstatus state='running' reason='booted' pid='{pid}'>"
        f"<domain type='qemu' id='1'><name>{name}</name><memory>32768</memory>"
        "<seclabel type='dynamic' model='dac' relabel='yes'>"
        "<label>+64055:+64055</label><imagelabel>+64055:+64055</imagelabel></seclabel>"
        f"<devices><disk type='file' device='disk'><source file='{img}'/>"
        f"<target dev='vda'/>{flags}</disk></devices></domain></domstatus>"
    )


def test_users_counted_per_driver(cfg: Config, tmp_path: Path) -> None:
    """Issue 12, problem 1: a DAC-only libvirt domain is no user for ``selinux``, and a
    read-only user holds no reference for either driver (libvirt never remembers for
    read-only or shareable media). Counting them made recover raise the counts so the
    original was never restored."""
    img = make_file(tmp_path / "shared.img", uid=1001, gid=1002)
    ro = make_file(tmp_path / "ro.img", uid=1001, gid=1002)
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(domain_xml("a", [disk_xml(img, "vda"), disk_xml(ro, "vdb")])))
    # libvirt's DAC driver counted itself in on the writable image: ref_dac 2.
    os.setxattr(img, LV + "ref_dac", b"2")
    keeper = subprocess.Popen(["sleep", "600"])
    try:
        _libvirt_dac_only(tmp_path / "libvirt", "lvw", keeper.pid, img)
        _libvirt_dac_only(tmp_path / "libvirt", "lvr", keeper.pid, ro, "<readonly/>")
        before = {p: xattrs(p) for p in (img, ro)}
        assert examine(cfg, [str(img), str(ro)]).findings == ()
        recover(cfg, [str(img), str(ro)], apply=True)
        assert {p: xattrs(p) for p in (img, ro)} == before
    finally:
        keeper.kill()
        keeper.wait()


def test_dac_refcount_finding_quotes_the_dac_message(cfg: Config, tmp_path: Path) -> None:
    """Issue 12, problem 4: the DAC "nothing uses it" finding quotes libvirt's DAC
    refusal, not the SELinux one."""
    img = make_file(tmp_path / "vm.img")
    libvirt_xattrs(img)
    found = examine(cfg, [str(img)]).findings
    texts = {f.family: f.evidence for f in found if f.kind is Kind.REFCOUNT}
    assert "Setting different DAC user or group on" in texts["dac"]
    assert "Setting different SELinux label on" in texts["selinux"]


def test_recover_repairs_run_in_a_journalled_transaction(cfg: Config, tmp_path: Path) -> None:
    """Issue 12: recover's repairs go through the Transaction (pinned inode, metadata
    lock, journal) like every other change: the journal records them."""
    img = make_file(tmp_path / "vm.img")
    libvirt_xattrs(img)
    conn = SecurityManager(cfg).conn

    def journalled() -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='journal_tx'").fetchone()
        return 0 if row is None else int(row[0])

    before = journalled()
    report = recover(cfg, [str(img)], apply=True)
    assert [a.what for a in report.actions if a.done] == ["restore", "restore"]
    assert xattrs(img) == {}
    assert journalled() == before + 2  # one journalled transaction per family
    assert conn.execute("SELECT count(*) FROM journal_tx").fetchone()[0] == 0  # closed
