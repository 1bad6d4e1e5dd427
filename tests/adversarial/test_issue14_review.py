"""Adversarial review of issue 14 (restore by name, drifted labels, shared static labels,
the verify page), on real files, real xattrs and the real state database.

Where a race is provoked, the interleaving is injected (the other svirt process's step
runs at the exact point between recover's scan and its repair): the step itself is the
real one.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial import vmutil
from fsutil import config, disk_xml, domain_xml, getfacl, image_dir, make_file, svirt_xattrs
from svirt import doctor
from svirt.cli.main import main
from svirt.domain import parse_domain
from svirt.host.procs import pid_alive
from svirt.host.selinux import getfilecon, setfilecon
from svirt.launch import lifecycle
from svirt.launch.lifecycle import start_domain
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore
from test_cli_label import ORIG, Env
from test_doctor_restore import ORIGINAL, conf_file, image, state, vm_xml


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    """Where the QEMU user can reach the images (pytest's tmp dirs are 0700)."""
    with image_dir("svirt-review14-") as d:
        yield d


def test_recover_never_relabels_a_file_whose_domain_was_restored_since_the_scan(
    vm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A labelled domain's file relabelled by hand to exactly its remembered original
    (restorecon's result): a drift. The domain is restored by name between recover's
    scan and its relabel; the file then carries that same label again, so a check of the
    label alone lets recover give the file the released domain's categories, with
    nothing remembered and no record to restore it."""
    cfg = config(vm_dir, libvirt_run_dir=str(vm_dir / "libvirt"), images_dirs=[])
    img = image(vm_dir, "a.img")
    before = state(img)
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(vm_xml("vm1", img)))
    setfilecon(img, ORIGINAL)  # the hand relabel (restorecon's label here)
    [finding] = [f for f in doctor.examine(cfg).findings if f.path == str(img)]
    assert finding.kind is doctor.Kind.DRIFTED_LABEL

    real = doctor._relabel

    def restored_meanwhile(*args: object, **kwargs: object) -> doctor.RecoverAction:
        SecurityManager(cfg).restore_domain("vm1")  # the other process's step
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(doctor, "_relabel", restored_meanwhile)
    [act] = [a for a in doctor.recover(cfg, apply=True).actions if a.what == "relabel"]
    assert not act.done and act.error is not None
    assert getfilecon(img) == ORIGINAL
    assert state(img) == before
    assert not [n for n in os.listxattr(img) if "libvirt" in n]


def test_forgetting_an_orphan_record_gives_back_its_directories_search_entries(
    tmp_path: Path,
) -> None:
    """ACL mode: labelling granted QEMU's identity search on the image's directory (a
    counted reference on the directory). The image is deleted: the record is an orphan.
    Forgetting it must not leave that grant behind with no record that could take it
    back (the directory exists, but it is not one of the record's files)."""
    d = tmp_path / "images"
    d.mkdir(mode=0o700)
    img = make_file(d / "a.img", uid=1234, gid=1234, mode=0o640)
    before = (getfacl(d), svirt_xattrs(d))
    cfg = config(tmp_path, dac_mode="acl")
    SecurityManager(cfg).label_domain(parse_domain(domain_xml("orphan", [disk_xml(img, "vda")])))
    assert (getfacl(d), svirt_xattrs(d)) != before  # the search entry and its count
    img.unlink()
    [finding] = [f for f in doctor.examine(cfg).findings if f.domains == ("orphan",)]
    assert finding.kind is doctor.Kind.ORPHAN_RECORD
    [act] = [a for a in doctor.recover(cfg, apply=True).actions if a.what == "forget"]
    assert (act.done, act.error) == (True, None)
    assert SecurityManager(cfg).store.read("orphan") is None
    assert (getfacl(d), svirt_xattrs(d)) == before


def test_verify_html_never_writes_through_a_planted_temporary_name(
    vm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`svirt verify --html FILE` runs as root, often with FILE in a shared directory
    (/tmp). Its temporary file had a predictable name (.FILE.PID.tmp) opened following
    symlinks: another user could plant that name as a symlink and have root overwrite
    any file with the page."""
    conf = conf_file(vm_dir)
    shared = vm_dir / "shared"
    shared.mkdir(mode=0o1777)
    victim = vm_dir / "victim"
    victim.write_text("precious\n")
    page = shared / "page.html"
    (shared / f".page.html.{os.getpid()}.tmp").symlink_to(victim)
    rc = main(["verify", "--config", str(conf), "--html", str(page)])
    capsys.readouterr()
    assert rc in (0, 1)
    assert victim.read_text() == "precious\n"
    assert page.is_file() and not page.is_symlink()
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


STATIC = "system_u:system_r:svirt_t:s0:c1022,c1023"


def _static_xml(d: Path, name: str, img: Path) -> Path:
    xml = d / f"{name}.xml"
    xml.write_text(
        f"<domain type='kvm'><name>{name}</name><os><type>hvm</type></os>"
        "<seclabel type='static' model='selinux' relabel='yes'>"
        f"<label>{STATIC}</label></seclabel><devices><disk type='file' device='disk'>"
        f"<source file='{img}'/><target dev='vda'/></disk></devices></domain>"
    )
    return xml


def test_restore_of_one_sharer_of_a_static_label_does_not_say_the_level_was_released(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two labelled domains share one static label; restoring one by name leaves the
    level reserved for the other: 'MCS level released' would say what did not happen."""
    env = Env(tmp_path)
    a, b = env.file("a.img"), env.file("b.img")
    for name, img in (("sa", a), ("sb", b)):
        assert env.run(capsys, "label", str(_static_xml(tmp_path, name, img)))[0] == 0
    rc, out, err = env.run(capsys, "restore", "sa")
    assert rc == 0, err
    first = out.splitlines()[0]
    assert "MCS level released" not in first
    assert "s0:c1022,c1023" in first and "sb" in first  # kept, and for whom
    assert [d for _, d in env.reservations()] == ["sb"]
    rc, out, err = env.run(capsys, "restore", "sb")
    assert rc == 0, err
    assert out.splitlines()[0].endswith("; MCS level released")


def test_restore_without_the_selinux_driver_names_no_mcs_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only the DAC driver there is no MCS level to release."""
    env = Env(tmp_path)
    env.conf.write_text(
        f'security_driver = "none"\nstate_dir = "{env.state}"\nvm_identity = "off"\n'
    )
    img = env.file("a.img")
    xml = tmp_path / "vm1.xml"
    xml.write_text(
        "<domain type='kvm'><name>vm1</name><os><type>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><source file='{img}'/><target dev='vda'/></disk>"
        "</devices></domain>"
    )
    assert env.run(capsys, "label", str(xml))[0] == 0
    rc, out, err = env.run(capsys, "restore", "vm1")
    assert rc == 0, err
    assert "MCS" not in out.splitlines()[0]


def _remembered(p: Path) -> tuple[object, ...]:
    return (state(p), {n: os.getxattr(p, n) for n in svirt_xattrs(p)})


def test_a_swapped_path_never_restores_a_sharer_s_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sa and sb share a static label, each on its own image. sa's image path is
    replaced by a symlink to sb's image (issue 11's swap): restoring sa must leave sb's
    file with sb's label, owner and remembered original. The label alone cannot tell
    (it is the same); the inode sa labelled can. For a dynamic label this was already
    refused (the file carries another domain's level)."""
    env = Env(tmp_path)
    a, b = env.file("a.img"), env.file("b.img")
    for name, img in (("sa", a), ("sb", b)):
        assert env.run(capsys, "label", str(_static_xml(tmp_path, name, img)))[0] == 0
    held = _remembered(b)
    a.unlink()
    a.symlink_to(b)
    rc, out, err = env.run(capsys, "restore", "sa")
    assert rc == 0, err
    assert _remembered(b) == held
    assert "left as it is: the path now names a file labelled for another" in out
    assert [d for _, d in env.reservations()] == ["sb"]
    # sb's own restore still puts its file back as it was
    rc, _out, err = env.run(capsys, "restore", "sb")
    assert rc == 0, err
    assert getfilecon(b) == ORIG and svirt_xattrs(b) == []


def test_recover_relabels_a_drifted_file_named_by_another_hard_link(vm_dir: Path) -> None:
    """The check that the domain still gives the file its label goes by the inode, as
    the scan does: a drift found through another hard link of the VM's image is put
    back (and only while the domain holds it)."""
    cfg = config(
        vm_dir, libvirt_run_dir=str(vm_dir / "libvirt"), images_dirs=[], allow_hard_links=True
    )
    img = image(vm_dir, "a.img")
    link = vm_dir / "link.img"
    os.link(img, link)
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(vm_xml("vm1", img)))
    wanted = getfilecon(img)
    setfilecon(img, ORIGINAL)
    acts = [a for a in doctor.recover(cfg, [str(link)], apply=True).actions if a.what == "relabel"]
    assert [(a.path, a.done, a.error) for a in acts] == [(str(link), True, None)]
    assert getfilecon(img) == wanted
    mgr.restore_domain("vm1")
    assert getfilecon(img) == ORIGINAL


@pytest.fixture
def small_state() -> Iterator[Path]:
    """A state directory on a small tmpfs (filled to the last byte by the test)."""
    with vmutil.image_dir() as d:
        st = d / "state"
        st.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(st)], check=True
        )
        try:
            yield d
        finally:
            subprocess.run(["umount", "-l", str(st)], check=False)


@pytest.mark.qemu
def test_stop_never_reports_an_earlier_run_s_restore_as_this_one(small_state: Path) -> None:
    """A run's restore that had to finish without the state database (a full disk)
    wrote no outcome report, so what `svirt stop` returned was the report an earlier
    run of the same domain left (its guest powered itself off, nobody asked): another
    disk list, printed as what this stop's restore did."""
    cfg = config(small_state, vm_identity="auto")
    a = vmutil.image(small_state, "a.img", uid=1001, gid=1001)
    b = vmutil.image(small_state, "b.img", uid=1001, gid=1001)
    store = DomainStore(cfg.state_dir)
    try:
        # run 1 (disk a only): QEMU dies on its own; its report stays unasked.
        res = start_domain(cfg, parse_domain(vmutil.vm_xml("full", [vmutil.disk(a, "vda")])))
        os.kill(res.pid, signal.SIGKILL)
        assert vmutil.wait_until(lambda: store.read("full") is None)
        # run 2 (disks a and b): it stops while the state directory is full.
        xml = vmutil.vm_xml("full", [vmutil.disk(a, "vda"), vmutil.disk(b, "vdb")])
        res = start_domain(cfg, parse_domain(xml))
        rec = store.read("full")
        assert rec is not None and rec.owner is not None
        filler = _fill(cfg.state_dir)
        os.kill(res.pid, signal.SIGKILL)
        assert vmutil.wait_until(lambda: svirt_xattrs(b) == []), "b not restored"
        filler.unlink()
        assert vmutil.wait_until(lambda: not pid_alive(rec.owner or 0), 30.0)
        assert store.read("full") is None
        # what `svirt stop` would print now: this run's restore, or no report at all
        outcomes, reported = lifecycle._taken(SecurityManager(cfg), "full")
        assert not reported or str(b) in {o.path for o in outcomes}
    finally:
        (cfg.state_dir / "filler").unlink(missing_ok=True)
        vmutil.stop_all(cfg)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (65536, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


def test_read_only_uri_opens_a_state_database_whose_path_has_uri_characters(
    tmp_path: Path,
) -> None:
    # doctor and the fleet ledger open the state database read-only through an sqlite URI:
    # a '?', '#' or '%' in the state directory must not cut or change the path.
    import sqlite3

    from svirt.state.db import readonly_uri

    state = tmp_path / "st?x=1#frag%41"
    state.mkdir()
    db = state / "svirt.db"
    rw = sqlite3.connect(db)
    rw.execute("CREATE TABLE t (v)")
    rw.execute("INSERT INTO t VALUES (42)")
    rw.commit()
    rw.close()
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.name]  # nothing else made
