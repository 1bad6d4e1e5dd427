"""Stacked drivers, transactions, crash safety and symlink safety (issue 4).

The crash test kills a real child process with SIGKILL after each mutation step k (the
only fake: where the crash happens is chosen by a hook), then runs recovery in the parent
and checks every file is exactly as before.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from fsutil import config, disk_xml, domain_xml, make_file, state, svirt_xattrs
from svirt.domain import parse_domain
from svirt.errors import SecurityError, StateError
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainState, DomainStore, may_move


def _domain(tmp_path: Path, n: int = 3, name: str = "vm") -> tuple[str, list[Path]]:
    imgs = [make_file(tmp_path / f"{name}{i}.img", uid=1000 + i, gid=2000 + i) for i in range(n)]
    iso = make_file(tmp_path / f"{name}.iso", mode=0o600)
    disks = [disk_xml(p, f"vd{chr(97 + i)}") for i, p in enumerate(imgs)]
    disks.append(disk_xml(iso, "hdc", readonly=True, device="cdrom"))
    return domain_xml(name, disks), [*imgs, iso]


def test_stack_rollback_when_dac_fails(tmp_path: Path) -> None:
    """SELinux labels the first disk, DAC refuses the second: everything is undone."""
    cfg = config(tmp_path)
    mgr = SecurityManager(cfg)
    shared = make_file(tmp_path / "shared.img", uid=1234, gid=1234)
    keep = "<seclabel model='selinux' relabel='no'/>"
    mgr.label_domain(parse_domain(domain_xml("first", [disk_xml(shared, "vda", extra=keep)])))
    first_state = state(shared)
    private = make_file(tmp_path / "private.img", uid=1500, gid=1500)
    private_before = state(private)
    other = (
        "<seclabel type='static' model='dac' relabel='yes'><label>+4000:+4000</label></seclabel>"
    )
    dom = domain_xml(
        "second", [disk_xml(private, "vda"), disk_xml(shared, "vdb", extra=keep)], seclabels=other
    )
    with pytest.raises(SecurityError, match="already in use"):
        mgr.label_domain(parse_domain(dom))
    assert state(private) == private_before  # SELinux and DAC both rolled back
    assert state(shared) == first_state  # the first domain's remembered state survives
    assert DomainStore(cfg.state_dir).read("second") is None
    assert mgr.selinux is not None and mgr.selinux.ledger.levels_of("second") == []


def test_failed_second_user_keeps_first_users_memory(tmp_path: Path) -> None:
    """The libvirt defect of platform.md: a second domain that fails on an image in use
    must not erase the remembered original owner and label of the first."""
    cfg = config(tmp_path)
    img = make_file(tmp_path / "img", uid=1234, gid=1234)
    original = state(img)
    mgr = SecurityManager(cfg)
    mgr.label_domain(parse_domain(domain_xml("a", [disk_xml(img, "vda")])))
    with pytest.raises(SecurityError, match=r"Setting different SELinux label on .* in use"):
        mgr.label_domain(parse_domain(domain_xml("b", [disk_xml(img, "vda")])))
    assert (
        os.getxattr(img, "trusted.libvirt.security.selinux") == b"system_u:object_r:virt_image_t:s0"
    )
    assert os.getxattr(img, "trusted.libvirt.security.dac") == b"+1234:+1234"
    mgr.restore_domain("a")
    assert state(img) == original


def _label_and_die(cfg_dir: str, xml: str, k: int, dac_mode: str) -> None:
    tmp = Path(cfg_dir)
    mgr = SecurityManager(config(tmp, dac_mode=dac_mode))

    def hook(step: int) -> None:
        if step == k:
            os.kill(os.getpid(), signal.SIGKILL)

    mgr.label_domain(parse_domain(xml), step_hook=hook)
    os._exit(0)


@pytest.mark.parametrize("dac_mode", ["chown", "acl"])
def test_crash_at_every_step_is_recovered(tmp_path: Path, dac_mode: str) -> None:
    xml, files = _domain(tmp_path)
    tmp_path.chmod(0o700)
    files.append(tmp_path)  # ACL mode grants search on the images' directory
    before = {f: state(f) for f in files}
    probe = SecurityManager(config(tmp_path, dac_mode=dac_mode))
    nops = len(probe.set_ops(probe.gen_labels(parse_domain(xml))))
    assert probe.selinux is not None
    probe.selinux.ledger.release("vm")
    assert nops >= 8  # SELinux and DAC ops for 3 disks and a CD-ROM
    ctx = multiprocessing.get_context("fork")
    for k in range(nops):
        child = ctx.Process(target=_label_and_die, args=(str(tmp_path), xml, k, dac_mode))
        child.start()
        child.join()
        assert child.exitcode == -signal.SIGKILL, k
        changed = [f for f in files if state(f) != before[f]]
        if k < nops - 1:
            assert changed, f"step {k}: the crash left nothing to recover?"
        mgr = SecurityManager(config(tmp_path, dac_mode=dac_mode))
        actions = mgr.recover()
        assert any(a.what == "restore" for a in actions), k
        for f in files:
            assert state(f) == before[f], (k, f)
            assert svirt_xattrs(f) == []
        assert DomainStore(tmp_path / "state").read("vm") is None, k
        assert mgr.selinux is not None and list(mgr.selinux.ledger.reservations()) == []


def test_crash_after_commit_is_not_undone(tmp_path: Path) -> None:
    xml, files = _domain(tmp_path, n=1)
    mgr = SecurityManager(config(tmp_path))
    mgr.label_domain(parse_domain(xml))
    labelled = {f: state(f) for f in files}
    assert SecurityManager(config(tmp_path)).recover() == []
    assert {f: state(f) for f in files} == labelled


_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): the two names swap atomically; neither is ever absent."""
    if _libc.renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


def _swapper(path: Path, target: Path, stop: threading.Event) -> None:
    link = path.with_name(path.name + ".link")
    link.symlink_to(target)
    while not stop.is_set():
        _exchange(path, link)  # path is now the symlink to the outside target
        _exchange(path, link)  # and the regular file again


def test_symlink_swap_race_never_touches_outside_target(tmp_path: Path) -> None:
    protected = tmp_path / "protected"
    protected.mkdir()
    target = make_file(protected / "secret", uid=0, gid=0, label="system_u:object_r:shadow_t:s0")
    target_before = state(target)
    img = make_file(tmp_path / "img", uid=1234, gid=1234)
    cfg = config(tmp_path, protected_paths=[str(protected)])
    mgr = SecurityManager(cfg)
    xml = domain_xml("vm", [disk_xml(img, "vda")])
    stop = threading.Event()
    t = threading.Thread(target=_swapper, args=(img, target, stop), daemon=True)
    t.start()
    outcomes = {"labelled": 0, "refused": 0}
    try:
        for _ in range(150):
            try:
                mgr.label_domain(parse_domain(xml))
            except SecurityError as exc:
                assert "refusing to label" in str(exc)
                outcomes["refused"] += 1
                continue
            outcomes["labelled"] += 1
            # Restore may meet the symlink too: it refuses that path and is retried.
            while True:
                try:
                    mgr.restore_domain("vm")
                    break
                except SecurityError:
                    continue
    finally:
        stop.set()
        t.join()
    assert state(target) == target_before
    assert outcomes["labelled"] > 0
    real = img if not img.is_symlink() else img.with_name("img.link")
    assert not real.is_symlink()
    assert svirt_xattrs(real) == []


def test_protected_path_refused(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    with pytest.raises(
        SecurityError,
        match="refusing to label /etc/passwd: /etc/passwd is under the protected path /etc",
    ):
        mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml("/etc/passwd", "vda")])))
    link = tmp_path / "link.img"
    link.symlink_to("/etc/hostname")
    with pytest.raises(SecurityError, match="protected path /etc"):
        mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(link, "vda")])))
    assert DomainStore(tmp_path / "state").read("vm") is None


def test_symlinked_image_is_followed(tmp_path: Path) -> None:
    img = make_file(tmp_path / "real.img", uid=1234, gid=1234)
    before = state(img)
    link = tmp_path / "link.img"
    link.symlink_to(img)
    mgr = SecurityManager(config(tmp_path))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(link, "vda")])))
    assert b"svirt_image_t" in os.getxattr(img, "security.selinux")
    mgr.restore_domain("vm")
    assert state(img) == before


def _label_shared(
    tmp: str, name: str, img: str, barrier: multiprocessing.synchronize.Barrier
) -> None:
    keep = "<seclabel model='selinux' relabel='no'/>"
    mgr = SecurityManager(config(Path(tmp)))
    barrier.wait()
    mgr.label_domain(parse_domain(domain_xml(name, [disk_xml(img, "vda", extra=keep)])))


def _restore(tmp: str, name: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    mgr = SecurityManager(config(Path(tmp)))
    barrier.wait()
    mgr.restore_domain(name)


def test_concurrent_processes_share_a_file(tmp_path: Path) -> None:
    img = make_file(tmp_path / "shared.img", uid=1234, gid=1234)
    before = state(img)
    ctx = multiprocessing.get_context("fork")
    for _round in range(3):
        names = [f"d{i}" for i in range(4)]
        barrier = ctx.Barrier(len(names))
        procs = [
            ctx.Process(target=_label_shared, args=(str(tmp_path), n, str(img), barrier))
            for n in names
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0
        assert os.getxattr(img, "trusted.libvirt.security.ref_dac") == b"4"
        barrier = ctx.Barrier(len(names))
        procs = [ctx.Process(target=_restore, args=(str(tmp_path), n, barrier)) for n in names]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0
        assert state(img) == before


def test_libvirt_running_domains_levels_are_never_handed_out(tmp_path: Path) -> None:
    """libvirt's live XML under libvirt_run_dir: its level is reserved as libvirt:<name>
    before svirt allocates, and released once libvirt's domain is gone."""
    run = tmp_path / "libvirt"
    run.mkdir()
    (run / "guest.xml").write_text(
        "<domstatus state='running' pid='1'><domain type='kvm' id='3'><name>guest</name>"
        "<seclabel type='dynamic' model='selinux' relabel='yes'>"
        "<label>system_u:system_r:svirt_t:s0:c1,c2</label>"
        "<imagelabel>system_u:object_r:svirt_image_t:s0:c1,c2</imagelabel></seclabel>"
        "</domain></domstatus>"
    )
    mgr = SecurityManager(config(tmp_path, libvirt_run_dir=str(run)))
    mgr.gen_labels(parse_domain(domain_xml("mine", [])))
    assert mgr.selinux is not None
    assert mgr.selinux.ledger.owner("s0:c1,c2") == "libvirt:guest"
    (run / "guest.xml").unlink()
    mgr.sync_libvirt_levels()
    assert mgr.selinux.ledger.owner("s0:c1,c2") is None


def _label_slowly(
    tmp: str,
    xml: str,
    started: multiprocessing.synchronize.Event,
    release: multiprocessing.synchronize.Event,
) -> None:
    mgr = SecurityManager(config(Path(tmp)))

    def hook(step: int) -> None:
        if step == 0:
            started.set()
            release.wait(30)

    mgr.label_domain(parse_domain(xml), step_hook=hook)


def test_second_label_of_the_same_name_fails_before_touching_anything(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    xml = domain_xml("vm", [disk_xml(img, "vda")])
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_label_slowly, args=(str(tmp_path), xml, started, release))
    first.start()
    assert started.wait(30)
    with pytest.raises(StateError, match="domain 'vm' is already labelling"):
        SecurityManager(config(tmp_path)).label_domain(parse_domain(xml))
    release.set()
    first.join()
    assert first.exitcode == 0
    mgr = SecurityManager(config(tmp_path))
    rec = mgr.store.read("vm")
    assert rec is not None and rec.state == "labelled"
    assert mgr.selinux is not None and len(mgr.selinux.ledger.levels_of("vm")) == 1
    mgr.restore_domain("vm")
    assert svirt_xattrs(img) == []


def _restore_and_die_after_commit(tmp: str) -> None:
    mgr = SecurityManager(config(Path(tmp)))

    def die(name: str) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    mgr.store.remove_view = die  # type: ignore[method-assign]  # crash right after the commit
    mgr.restore_domain("b")


def test_crash_after_restore_commit_never_recalls_twice(tmp_path: Path) -> None:
    """The restore's journal close, the release of the level and the end of the claim
    commit together: a crash just after cannot make a rerun take a second reference."""
    kernel = make_file(tmp_path / "vmlinuz", uid=1234, gid=1234)
    mgr = SecurityManager(config(tmp_path))
    for name in ("a", "b"):
        xml = (
            f"<domain type='kvm'><name>{name}</name><os><type>hvm</type>"
            f"<kernel>{kernel}</kernel></os></domain>"
        )
        mgr.label_domain(parse_domain(xml))
    assert os.getxattr(kernel, "trusted.libvirt.security.ref_dac") == b"2"
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_restore_and_die_after_commit, args=(str(tmp_path),))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    assert os.getxattr(kernel, "trusted.libvirt.security.ref_dac") == b"1"
    mgr = SecurityManager(config(tmp_path))
    with pytest.raises(SecurityError, match="domain 'b' has no labels to restore"):
        mgr.restore_domain("b")
    assert os.getxattr(kernel, "trusted.libvirt.security.ref_dac") == b"1"  # a's reference
    mgr.restore_domain("a")
    assert (os.stat(kernel).st_uid, os.stat(kernel).st_gid) == (1234, 1234)
    assert svirt_xattrs(kernel) == []


def test_unrecoverable_journal_entry_does_not_block_other_domains(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    other = make_file(tmp_path / "b.img", uid=1234, gid=1234)
    xml = domain_xml("vm", [disk_xml(img, "vda")])
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_label_and_die, args=(str(tmp_path), xml, 0, "chown"))
    child.start()
    child.join()
    subprocess.run(["chattr", "+i", str(img)], check=True)  # cannot be written back now
    try:
        mgr = SecurityManager(config(tmp_path))
        actions = mgr.recover()
        assert [a.what for a in actions] == ["failed"]
        mgr.label_domain(parse_domain(domain_xml("other", [disk_xml(other, "vda")])))
        mgr.restore_domain("other")
    finally:
        subprocess.run(["chattr", "-i", str(img)], check=True)
    assert [a.what for a in SecurityManager(config(tmp_path)).recover()] == ["restore"]
    assert svirt_xattrs(img) == []


def _reconcile(tmp: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    from svirt.launch.lifecycle import reconcile

    cfg = config(Path(tmp))
    mgr = SecurityManager(cfg)
    barrier.wait()
    reconcile(cfg, mgr)


def test_dead_domain_is_restored_once_however_many_reconcile(tmp_path: Path) -> None:
    """Two commands reconciling the same dead domain race to take its row; one restores."""
    shared = make_file(tmp_path / "shared.img", uid=1234, gid=1234)
    keep = "<seclabel model='selinux' relabel='no'/>"
    mgr = SecurityManager(config(tmp_path))
    for name in ("other", "dead"):
        mgr.label_domain(parse_domain(domain_xml(name, [disk_xml(shared, "vda", extra=keep)])))
    assert os.getxattr(shared, "trusted.libvirt.security.ref_dac") == b"2"
    gone = subprocess.Popen(["true"])
    gone.wait()
    # its monitor and QEMU died (forged in the row: the transition table never lets a
    # labelled domain run without a monitor starting it)
    with mgr.conn:
        mgr.conn.execute(
            "UPDATE domains SET state='running', owner=? WHERE name='dead'", (gone.pid,)
        )
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_reconcile, args=(str(tmp_path), barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert os.getxattr(shared, "trusted.libvirt.security.ref_dac") == b"1"  # other's
    assert [r[0] for r in SecurityManager(config(tmp_path)).store.rows()] == ["other"]


def test_take_is_won_once(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    mgr.store.claim("vm", DomainState.LABELLING, 1)
    mgr.store.set_state("vm", DomainState.LABELLED)
    assert mgr.store.take("vm", ("labelled",), 1, DomainState.RESTORING)
    assert not mgr.store.take("vm", ("labelled",), 1, DomainState.RESTORING)


def test_domain_states_follow_the_transition_table(tmp_path: Path) -> None:
    """One table of allowed state changes (issue 12): a change it does not list is
    refused, before anything is written."""
    mgr = SecurityManager(config(tmp_path))
    with pytest.raises(StateError, match="cannot go from no record to running"):
        mgr.store.claim("vm", DomainState.RUNNING, 1)
    mgr.store.claim("vm", DomainState.LABELLING, 1)
    mgr.store.set_state("vm", DomainState.LABELLED)
    with pytest.raises(StateError, match="domain 'vm' cannot go from labelled to running"):
        mgr.store.set_state("vm", DomainState.RUNNING)
    assert mgr.store.rows()[0][1] == "labelled"
    # take() never takes a state the table does not let move to the target
    assert not mgr.store.take("vm", ("labelled",), 1, DomainState.STOPPING)
    assert may_move(DomainState.RUNNING, DomainState.STOPPING)
    assert not may_move(DomainState.RUNNING, DomainState.LABELLED)
    assert {s for s in DomainState if s.active} == {
        DomainState.STARTING,
        DomainState.LAUNCHING,
        DomainState.RUNNING,
        DomainState.STOPPING,
    }


def test_views_follow_the_rows(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img")
    mgr = SecurityManager(config(tmp_path))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
    view = tmp_path / "state" / "domains" / "vm.xml"
    view.write_text(view.read_text().replace("state='labelled'", "state='labelling'"))
    (tmp_path / "state" / "domains" / "ghost.xml").write_text("<domstatus/>")
    SecurityManager(config(tmp_path)).recover()
    assert "state='labelled'" in view.read_text()
    assert not (tmp_path / "state" / "domains" / "ghost.xml").exists()


def test_restore_is_refused_while_another_process_labels(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1234, gid=1234)
    xml = domain_xml(
        "vm",
        [disk_xml(img, "vda")],
        seclabels="<seclabel type='static' model='selinux' relabel='yes'>"
        "<label>system_u:system_r:svirt_t:s0:c11,c12</label></seclabel>",
    )
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_label_slowly, args=(str(tmp_path), xml, started, release))
    first.start()
    assert started.wait(30)
    try:
        with pytest.raises(SecurityError, match="being changed by another svirt process"):
            SecurityManager(config(tmp_path)).restore_domain("vm", fallback=parse_domain(xml))
    finally:
        release.set()
        first.join()
    mgr = SecurityManager(config(tmp_path))
    assert mgr.store.read("vm") is not None
    mgr.restore_domain("vm")
    assert svirt_xattrs(img) == []


def test_old_state_database_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / "svirt.db")
    old.execute(
        "CREATE TABLE domains (name TEXT PRIMARY KEY, state TEXT NOT NULL, pid "
        "INTEGER, owner INTEGER NOT NULL, pending TEXT NOT NULL DEFAULT '')"
    )
    old.commit()
    old.close()
    mgr = SecurityManager(config(tmp_path))
    cols = {r[1] for r in mgr.conn.execute("PRAGMA table_info(domains)")}
    assert {"xml", "private_dev"} <= cols
