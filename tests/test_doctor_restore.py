"""Doctor and recover for svirt's records and for a running VM's drifted label (issue 14,
part "restore"), on real files, real xattrs, a real QEMU and the real policy.

- The Fedora sVirt page's test: a running VM's image relabelled by hand (``chcon -l
  s0:c1``). doctor, ``audit explain`` and ``verify`` give the same fix, the VM's own label
  (or ``svirt recover --apply``), and recover puts it back; never ``restorecon`` or
  ``chcon -l s0``.
- A labelled domain with no VM (its XML file deleted) is reported with ``svirt restore
  NAME``; a record whose files are all gone is an orphan that ``recover --apply`` forgets.
- Records are read with their processes' start times: a pid reused by another process
  is not the record's QEMU or monitor (review leftovers of the last session).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import svirt
from fsutil import config, image_dir, make_file, state
from svirt.audit.explain import Denial, explain_denial
from svirt.audit.owners import load_live_domains
from svirt.cli.main import main
from svirt.conf import Config, load_config
from svirt.doctor import Kind, RepairKind, examine, recover
from svirt.domain import parse_domain
from svirt.errors import LaunchError
from svirt.host.procs import start_time
from svirt.host.selinux import getfilecon, setfilecon
from svirt.launch.lifecycle import start_domain, stop_domain
from svirt.policy import PolicyOracle
from svirt.policy.verify import find_live_domains
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore

ORIGINAL = "system_u:object_r:virt_image_t:s0"


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    """Where the QEMU user can reach the images (pytest's tmp dirs are 0700)."""
    with image_dir("svirt-restore-") as d:
        yield d


def conf_file(d: Path) -> Path:
    conf = d / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{d / "state"}"\n'
        f'libvirt_run_dir = "{d / "libvirt"}"\nimages_dirs = []\nvm_identity = "off"\n'
    )
    return conf


def vm_xml(name: str, *images: Path) -> str:
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{p}'/><target dev='vd{chr(97 + i)}' bus='virtio'/></disk>"
        for i, p in enumerate(images)
    )
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>{disks}</devices>"
        "</domain>"
    )


def image(d: Path, name: str) -> Path:
    p = make_file(d / name, label=ORIGINAL)
    os.truncate(p, 1 << 20)
    return p


def reservations(cfg: Config) -> list[str]:
    conn = sqlite3.connect(cfg.state_dir / "svirt.db")
    try:
        return [r[0] for r in conn.execute("SELECT domain FROM mcs_reservations")]
    finally:
        conn.close()


def stop_all(cfg: Config) -> None:
    for rec in list(DomainStore(cfg.state_dir).records()):
        try:
            stop_domain(cfg, rec.domain.name, force=True)
        except LaunchError:
            pass


@pytest.mark.qemu
def test_fedora_page_relabel_of_a_running_vm(
    vm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = conf_file(vm_dir)
    cfg = load_config(conf)
    img = image(vm_dir, "f11.img")
    before = state(img)
    res = start_domain(cfg, parse_domain(vm_xml("f11", img)))
    try:
        assert res.label is not None and res.imagelabel is not None
        level = res.imagelabel.split(":", 3)[3]
        cats = {int(c[1:]) for c in level.split(":")[1].split(",")}
        # The page's `chcon -l s0:c1`, with a category this VM does not have.
        cat = next(c for c in (1, 2, 3) if c not in cats)
        drifted = f"system_u:object_r:svirt_image_t:s0:c{cat}"
        setfilecon(img, drifted)

        # doctor: the remembered original is there, and the fix keeps isolation
        [finding] = [f for f in examine(cfg).findings if f.path == str(img)]
        assert finding.kind is Kind.DRIFTED_LABEL and finding.repair is RepairKind.RELABEL
        assert f"gave this file the label {res.imagelabel}" in finding.evidence
        assert f"carries {drifted} now" in finding.evidence
        assert f"f11 can no longer use it (it lacks c{cat})" in finding.evidence
        assert f"the remembered original {ORIGINAL} is kept" in finding.evidence
        assert "no remembered original" not in finding.evidence
        assert finding.manual == f"chcon -l {level} {img}"
        assert finding.fix == f"svirt recover --config {conf} --apply {img}"
        assert finding.label == res.imagelabel

        # audit explain computes the same fix for the VM's denial (one rule, svirt.advice)
        denial = Denial(
            scontext=res.label,
            tcontext=drifted,
            tclass="file",
            perms=("read", "write"),
            denied=True,
            permissive=False,
            user_space=False,
            comm="qemu-system-x86",
            exe=None,
            pids=(res.pid,),
            name=img.name,
            path=str(img),
            dev=None,
            ino=img.stat().st_ino,
            count=1,
            first=0.0,
            last=0.0,
            serials=(1,),
        )
        oracle = PolicyOracle(cfg.policy_path)
        x = explain_denial(
            denial, oracle=oracle, domains=load_live_domains(cfg.state_dir, cfg.libvirt_run_dir)
        )
        assert [f.command for f in x.fixes] == [
            finding.manual,
            f"svirt recover --apply {img}",
        ]
        assert x.do_not is not None and "Do not run restorecon" in x.do_not

        # verify: exit 1 with the fix (before: exit 0, no fix), --json carries it
        rc = main(["verify", "--config", str(conf)])
        out, _ = capsys.readouterr()
        assert rc == 1
        assert f"f11 cannot read-write its disk vda {img} labelled {drifted}" in out
        assert f": chcon -l {level} {img}\n" in out
        assert f": svirt recover --config {conf} --apply {img}\n" in out
        rc = main(["verify", "--json", "--config", str(conf)])
        out, _ = capsys.readouterr()
        assert rc == 1
        [own] = json.loads(out)["own_denials"]
        assert [f["command"] for f in own["fixes"]] == [finding.manual, finding.fix]
        for text in (out, *(f.fix for f in examine(cfg).findings)):
            assert "restorecon" not in text and "chcon -l s0 " not in text

        # recover: the dry run lists it and changes nothing; --apply puts the label back
        dry = [a for a in recover(cfg).actions if a.what == "relabel"]
        assert [(a.path, a.done) for a in dry] == [(str(img), False)]
        assert dry[0].description == f"{drifted} -> {res.imagelabel} (the label of domain f11)"
        assert getfilecon(img) == drifted
        remembered = {n: os.getxattr(img, n) for n in os.listxattr(img) if "libvirt" in n}
        done = [a for a in recover(cfg, apply=True).actions if a.what == "relabel"]
        assert [(a.path, a.done, a.error) for a in done] == [(str(img), True, None)]
        assert getfilecon(img) == res.imagelabel
        assert {n: os.getxattr(img, n) for n in os.listxattr(img) if "libvirt" in n} == remembered
        assert [f for f in examine(cfg).findings if f.path == str(img)] == []
        assert main(["verify", "--config", str(conf)]) == 0
        capsys.readouterr()
    finally:
        stop_all(cfg)
    assert state(img) == before  # stop still restores the original


def _forge(cfg: Config, name: str, state_name: str, pid: int, start: int | None) -> DomainStore:
    """Rewrite a labelled domain's row (the transition table never lets a labelled
    domain run: a real one goes starting -> launching -> running under a monitor)."""
    store = SecurityManager(cfg).store
    with store._db() as conn:
        conn.execute(
            "UPDATE domains SET state=?, pid=?, owner=?, pid_start=?, owner_start=? WHERE name=?",
            (state_name, pid, pid, start, start, name),
        )
    store.sync_views()
    return store


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not the record's: what a reused pid names."""
    child = subprocess.Popen(["sleep", "600"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_restore_failed_view_does_not_name_a_dead_qemu(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    cfg = config(tmp_path, libvirt_run_dir=str(tmp_path / "libvirt"))
    img = make_file(tmp_path / "a.img")
    SecurityManager(cfg).label_domain(parse_domain(vm_xml("rf", img)))
    # Even with the pid's true start time: a restore-failed record's QEMU is gone.
    _forge(cfg, "rf", "restore-failed", stranger.pid, start_time(stranger.pid))
    view = (cfg.state_dir / "domains" / "rf.xml").read_text()
    assert "state='restore-failed'" in view and f"pid='{stranger.pid}'" not in view
    found, skipped = find_live_domains(cfg)
    assert found == []
    assert [s.reason for s in skipped] == [
        "not a status XML (no <domstatus pid=...>): " + ("cannot tell if it runs")
    ]


def test_a_reused_pid_is_not_the_record_s_qemu(
    vm_dir: Path, stranger: subprocess.Popen[bytes]
) -> None:
    cfg = config(vm_dir, libvirt_run_dir=str(vm_dir / "libvirt"), images_dirs=[])
    img = image(vm_dir, "a.img")
    before = state(img)
    SecurityManager(cfg).label_domain(parse_domain(vm_xml("reuse", img)))
    # The record's monitor and QEMU died; their pid now names another process.
    real = start_time(stranger.pid)
    assert real is not None
    _forge(cfg, "reuse", "running", stranger.pid, real + 1)
    view = (cfg.state_dir / "domains" / "reuse.xml").read_text()
    assert f"svirt-pid-start='{real + 1}'" in view
    # verify does not take the stranger for the VM
    assert find_live_domains(cfg)[0] == []
    # doctor reports the dead record (it read views without start times: no finding)
    dead = [f for f in examine(cfg).findings if f.kind is Kind.DEAD_DOMAIN]
    assert [f.domains for f in dead] == [("reuse",)]
    assert f"(pid {stranger.pid})" in dead[0].evidence
    # start does not refuse with "already active" (it did, from the view): the next
    # command restores the dead record's labels first, then the VM starts.
    try:
        res = start_domain(cfg, parse_domain(vm_xml("reuse", img)))
        assert res.pid != stranger.pid
    finally:
        stop_all(cfg)
    assert stranger.poll() is None  # the stranger was never touched
    assert state(img) == before


def test_a_labelled_domain_whose_xml_is_gone_is_reported_with_restore_name(
    vm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = conf_file(vm_dir)
    img = image(vm_dir, "a.img")
    before = state(img)
    xml = vm_dir / "vm1.xml"
    xml.write_text(vm_xml("vm1", img))
    assert main(["label", "--config", str(conf), str(xml)]) == 0
    xml.unlink()
    capsys.readouterr()
    rc = main(["doctor", "--config", str(conf)])
    out, _ = capsys.readouterr()
    assert rc == 1  # before: 0 findings
    assert "[labelled] svirt domain vm1 is labelled (svirt label) and no VM runs it" in out
    assert f"fix: svirt restore --config {conf} vm1" in out
    # recover leaves it to a human: a labelled domain may be wanted
    rc = main(["recover", "--apply", "--config", str(conf)])
    out, _ = capsys.readouterr()
    assert rc == 0 and "not repaired (needs a decision): svirt domain vm1" in out
    assert state(img) != before
    # the fix it names works without the XML file
    assert main(["restore", "--config", str(conf), "vm1"]) == 0
    assert state(img) == before
    capsys.readouterr()
    assert main(["doctor", "--config", str(conf)]) == 0
    assert "0 findings" in capsys.readouterr().out


def test_an_orphan_record_is_forgotten_and_no_file_is_touched(
    vm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(vm_dir, libvirt_run_dir=str(vm_dir / "libvirt"), images_dirs=[])
    a, b, kept = image(vm_dir, "a.img"), image(vm_dir, "b.img"), image(vm_dir, "kept.img")
    gone = image(vm_dir, "gone.img")
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(vm_xml("orphan", a, b)))
    mgr.label_domain(parse_domain(vm_xml("half", kept, gone)))
    labelled = state(kept)
    for p in (a, b, gone):
        p.unlink()
    report = examine(cfg)
    by_domain = {f.domains: f for f in report.findings if f.path is None}
    orphan = by_domain[("orphan",)]
    assert orphan.kind is Kind.ORPHAN_RECORD and orphan.repair is RepairKind.FORGET
    assert f"names only files that are gone ({a}, {b})" in orphan.evidence
    assert orphan.fix == "svirt recover --apply"
    # a record with one file left is not an orphan: it is released by name
    half = by_domain[("half",)]
    assert half.kind is Kind.LABELLED and half.fix == "svirt restore half"

    dry = [a for a in recover(cfg).actions if a.what == "forget"]
    assert [x.done for x in dry] == [False]
    assert dry[0].description.startswith("the record of domain orphan (every file")
    assert sorted(reservations(cfg)) == ["half", "orphan"]

    done = [x for x in recover(cfg, apply=True).actions if x.what == "forget"]
    assert [(x.done, x.error) for x in done] == [(True, None)]
    assert reservations(cfg) == ["half"]
    assert mgr.store.read("orphan") is None
    assert not (cfg.state_dir / "domains" / "orphan.xml").exists()
    assert state(kept) == labelled  # the other record's files are left as they are
    assert [f.kind for f in examine(cfg).findings if f.path is None] == [Kind.LABELLED]


def test_list_shows_no_pid_for_a_qemu_that_is_gone(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    # The record names a pid reused since by another process (its start time differs):
    # `svirt list` must not show that process as the domain's QEMU.
    cfg = config(tmp_path, libvirt_run_dir=str(tmp_path / "libvirt"))
    img = make_file(tmp_path / "a.img")
    SecurityManager(cfg).label_domain(parse_domain(vm_xml("rf", img)))
    started = start_time(stranger.pid)
    assert started is not None
    _forge(cfg, "rf", "restore-failed", stranger.pid, started + 12345)
    rows = [r for r in svirt.Host(cfg).listing() if r.name == "rf"]
    assert [(r.state, r.pid) for r in rows] == [("restore-failed", None)]
