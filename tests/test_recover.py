"""svirt recover on real files: dry run changes nothing; --apply puts back exactly what
was there before (label, owner, ACL) and only then removes the remembered xattrs; files
in use keep their state and get their count corrected; nothing remembered is ever lost."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from pathlib import Path

import pytest

from fsutil import config, disk_xml, domain_xml, getfacl, make_file, state, svirt_xattrs
from svirt.cli.main import main
from svirt.conf import Config
from svirt.doctor import examine, recover, repair_file
from svirt.domain import parse_domain
from svirt.host.ids import resolve_uid
from svirt.security.manager import SecurityManager
from svirt.security.remember import boot_time
from svirt.state.domains import DomainState, DomainStore

ORIGINAL = "system_u:object_r:virt_image_t:s0"
VM_LABEL = "system_u:object_r:svirt_image_t:s0:c249,c396"
OLD_BOOT = "1749811180"
LV = "trusted.libvirt.security."
QEMU_UID = resolve_uid("svirt-qemu")


def libvirt_xattrs(path: Path, *, ref: str = "1", timestamp: str | None = None) -> None:
    """libvirt 9's xattrs on a running VM's writable disk (seed 000), owner 107:107."""
    ts = timestamp if timestamp is not None else str(boot_time())
    os.setxattr(path, "security.selinux", VM_LABEL.encode() + b"\0")
    for name, value in (
        ("dac", "+0:+0"),
        ("ref_dac", ref),
        ("ref_selinux", ref),
        ("selinux", ORIGINAL),
        ("timestamp_dac", ts),
        ("timestamp_selinux", ts),
    ):
        os.setxattr(path, LV + name, value.encode())
    os.chown(path, 107, 107)


def label_of(path: Path) -> str:
    return os.getxattr(path, "security.selinux").rstrip(b"\0").decode()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return config(
        tmp_path,
        images_dirs=[str(tmp_path / "images")],
        libvirt_run_dir=str(tmp_path / "libvirt"),
    )


@pytest.mark.parametrize(
    "timestamp", [None, OLD_BOOT, f"6a1e9c8e-4b7d-4c36-9d52-3f0c0a6d8e11-{OLD_BOOT}"]
)
def test_unused_file_gets_its_original_back(
    cfg: Config, tmp_path: Path, timestamp: str | None
) -> None:
    img = make_file(tmp_path / "vm.qcow2")
    libvirt_xattrs(img, timestamp=timestamp)
    before = state(img)

    dry = recover(cfg, [str(img)])
    assert not dry.applied and state(img) == before  # a dry run changes nothing
    assert [a.what for a in dry.actions if a.path == str(img)][:2] == ["restore", "restore"]
    assert all(not a.done for a in dry.actions)

    done = recover(cfg, [str(img)], apply=True)
    assert not done.failed
    assert label_of(img) == ORIGINAL
    assert (os.stat(img).st_uid, os.stat(img).st_gid) == (0, 0)
    assert svirt_xattrs(img) == []
    assert examine(cfg, [str(img)]).findings == ()


def test_held_file_keeps_its_state_and_gets_its_count(
    cfg: Config, tmp_path: Path, holder: object
) -> None:
    img = make_file(tmp_path / "two.img")
    libvirt_xattrs(img, ref="2")
    holder(img)  # type: ignore[operator]
    recover(cfg, [str(img)], apply=True)
    assert label_of(img) == VM_LABEL  # still in use: nothing restored
    assert os.stat(img).st_uid == 107
    assert os.getxattr(img, LV + "selinux") == ORIGINAL.encode()  # the original is kept
    assert os.getxattr(img, LV + "ref_selinux") == b"1"
    assert os.getxattr(img, LV + "ref_dac") == b"1"
    assert os.getxattr(img, LV + "timestamp_selinux") == str(boot_time()).encode()


def test_held_stale_file_gets_this_boot(cfg: Config, tmp_path: Path, holder: object) -> None:
    img = make_file(tmp_path / "old.img")
    libvirt_xattrs(img, timestamp=OLD_BOOT)
    holder(img)  # type: ignore[operator]
    report = recover(cfg, [str(img)], apply=True)
    assert {a.what for a in report.actions if a.done} == {"refcount"}
    for drv in ("selinux", "dac"):
        assert os.getxattr(img, f"{LV}timestamp_{drv}") == str(boot_time()).encode()
        assert os.getxattr(img, f"{LV}ref_{drv}") == b"1"
    assert os.getxattr(img, LV + "dac") == b"+0:+0"
    assert [f for f in examine(cfg, [str(img)]).findings if f.kind.value != "orphan-label"] == []


def test_svirt_chown_state_lost_round_trips(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234, mode=0o640)
    before = state(img)
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(domain_xml("lost", [disk_xml(img, "vda")])))
    assert state(img) != before
    mgr.store.remove("lost")
    assert mgr.selinux is not None
    mgr.selinux.ledger.release("lost")
    recover(cfg, [str(img)], apply=True)
    assert state(img) == before


def test_svirt_acl_state_lost_round_trips(tmp_path: Path) -> None:
    cfg = config(tmp_path, dac_mode="acl", libvirt_run_dir=str(tmp_path / "libvirt"))
    d = tmp_path / "images"
    d.mkdir(mode=0o700)
    img = make_file(d / "a.img", uid=1234, gid=1234, mode=0o640)
    subprocess.run(["setfacl", "-m", "u:4242:r", str(img)], check=True)  # a prior ACL
    before = {p: (getfacl(p), state(p)) for p in (d, img)}
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(domain_xml("acl", [disk_xml(img, "vda")])))
    assert f"user:{QEMU_UID}:rw-" in getfacl(img) and f"user:{QEMU_UID}:--x" in getfacl(d)

    # While the domain is labelled, its file and directory are in use: nothing to do.
    assert [f for f in examine(cfg, [str(d)]).findings] == []
    mgr.store.remove("acl")
    assert mgr.selinux is not None
    mgr.selinux.ledger.release("acl")
    found = {(f.path, f.family) for f in examine(cfg, [str(d)]).findings}
    assert (str(img), f"acl_{QEMU_UID}") in found and (str(d), f"acl_{QEMU_UID}") in found

    # ACL mode also granted search on the 0700 directories above (pytest's own).
    recover(cfg, [str(d), *(str(p) for p in d.parents)], apply=True)
    for p in d.parents:
        assert not any(n.startswith("trusted.svirt.") for n in os.listxattr(p)), p
    for p, (facl, st) in before.items():
        assert getfacl(p) == facl, p
        assert state(p) == st, p


def test_orphan_label_without_original_is_left_for_a_human(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "chcon.img", label="system_u:object_r:svirt_image_t:s0:c7,c8")
    before = state(img)
    report = recover(cfg, [str(img)], apply=True)
    assert state(img) == before
    [manual] = [a for a in report.actions if a.what == "manual"]
    assert manual.path == str(img) and f"restorecon -v {img}" in manual.description


def test_an_invalid_original_is_never_dropped(
    cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = make_file(tmp_path / "bad.img")
    libvirt_xattrs(img)
    os.setxattr(img, LV + "selinux", b"not a context")
    conf = tmp_path / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{cfg.state_dir}"\n'
        f'libvirt_run_dir = "{cfg.libvirt_run_dir}"\n'
    )
    assert main(["recover", "--config", str(conf), "--apply", str(img)]) == 1
    out = capsys.readouterr().out
    assert "FAILED restore" in out and "is not a valid context; left as is" in out
    assert os.getxattr(img, LV + "selinux") == b"not a context"  # kept
    assert os.getxattr(img, LV + "ref_selinux") == b"1"
    assert label_of(img) == VM_LABEL
    assert os.stat(img).st_uid == 0  # the DAC family was fine and was restored


def test_state_changed_since_the_scan_is_left_alone(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "race.img")
    libvirt_xattrs(img)
    [facts] = examine(cfg, [str(img)]).files
    os.setxattr(img, LV + "ref_selinux", b"2")  # another start took a reference meanwhile
    actions = repair_file(facts, apply=True)
    sel = [a for a in actions if "selinux" in a.description]
    assert sel and all(a.error and "changed since the scan" in a.error for a in sel)
    assert label_of(img) == VM_LABEL
    assert os.getxattr(img, LV + "selinux") == ORIGINAL.encode()


def test_a_file_replaced_since_the_scan_is_not_touched(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "swap.img")
    libvirt_xattrs(img)
    [facts] = examine(cfg, [str(img)]).files
    new = make_file(tmp_path / "new.img", label="system_u:object_r:user_home_t:s0")
    os.replace(new, img)
    before = state(img)
    [action] = repair_file(facts, apply=True)
    assert action.error == "replaced by another file since the scan"
    assert state(img) == before


def _record_dead(cfg: Config, name: str) -> None:
    """Make a labelled domain look like one whose monitor died with its QEMU."""
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that no longer exists
    store = SecurityManager(cfg).store  # the authoritative row and the XML view
    rec = store.read(name)
    assert rec is not None
    # Forged in the row itself: the transition table never lets a labelled domain run
    # (a real one goes starting -> launching -> running under a live monitor).
    with store._db() as conn:
        conn.execute("UPDATE domains SET state='running', owner=? WHERE name=?", (child.pid, name))
    store.write(rec.domain, DomainState.RUNNING, owner=child.pid)


def test_dead_monitor_is_reconciled(cfg: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    before = state(img)
    SecurityManager(cfg).label_domain(parse_domain(domain_xml("dead", [disk_xml(img, "vda")])))
    _record_dead(cfg, "dead")
    [finding] = [f for f in examine(cfg).findings if f.kind.value == "dead-domain"]
    assert "svirt domain dead is recorded as running" in finding.evidence
    assert finding.fix == "svirt recover --apply"

    dry = recover(cfg)
    assert [a.what for a in dry.actions if a.what == "reconcile"] == ["reconcile"]
    assert state(img) != before

    done = recover(cfg, apply=True)
    assert [a.description for a in done.actions if a.what == "reconcile"] == [
        "restored the labels of dead"
    ]
    assert state(img) == before
    assert DomainStore(cfg.state_dir).read("dead") is None


def _label_and_die(state_dir: str, xml: str) -> None:
    mgr = SecurityManager(config(Path(state_dir)))

    def hook(step: int) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    mgr.label_domain(parse_domain(xml), step_hook=hook)
    os._exit(0)


def test_interrupted_transaction_is_rolled_back_first(cfg: Config, tmp_path: Path) -> None:
    imgs = [make_file(tmp_path / f"{i}.img", uid=1000 + i, gid=1000 + i) for i in range(3)]
    before = {p: state(p) for p in imgs}
    xml = domain_xml("crash", [disk_xml(p, f"vd{'abc'[i]}") for i, p in enumerate(imgs)])
    child = multiprocessing.get_context("fork").Process(
        target=_label_and_die, args=(str(tmp_path), xml)
    )
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    assert any(state(p) != before[p] for p in imgs)

    dry = recover(cfg, [str(p) for p in imgs])
    assert any(a.what == "rollback" and not a.done for a in dry.actions)
    assert any(state(p) != before[p] for p in imgs)

    done = recover(cfg, [str(p) for p in imgs], apply=True)
    assert any(a.what == "rollback" and a.done for a in done.actions)
    assert not done.failed
    for p in imgs:
        assert state(p) == before[p]


def test_cli_dry_run_then_apply(
    cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = make_file(tmp_path / "vm.img")
    libvirt_xattrs(img, timestamp=OLD_BOOT)
    conf = tmp_path / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{cfg.state_dir}"\n'
        f'libvirt_run_dir = "{cfg.libvirt_run_dir}"\n'
    )
    before = state(img)
    assert main(["recover", "--config", str(conf), str(img)]) == 0
    out = capsys.readouterr().out
    assert f"would restore: {img}: restore selinux: put back the remembered label {ORIGINAL}" in out
    assert "dry run: nothing changed; run with --apply" in out
    assert state(img) == before
    assert main(["recover", "--config", str(conf), "--apply", str(img)]) == 0
    out = capsys.readouterr().out
    assert f"restore: {img}: label -> {ORIGINAL}; removed {LV}selinux" in out
    assert main(["doctor", "--config", str(conf), str(img)]) == 0
