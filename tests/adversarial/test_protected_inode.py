"""Protected paths judged on the inode (issue 11, high): a hard link, a bind mount of a
protected tree, of one of its subtrees or of one protected file, a protected_paths entry
that is a symlink or holds '..', and the state directory itself. Each was accepted by
653d5a9 (the check compared only the path the file was opened by)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import config, disk_xml, domain_xml, make_file, state, svirt_xattrs
from svirt.domain import parse_domain
from svirt.errors import SecurityError
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore

SHADOW = "system_u:object_r:shadow_t:s0"


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Bind mounts made by the test, unmounted (innermost first) at its end."""
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)], check=False)


def bind(src: Path, dst: Path, made: list[Path]) -> None:
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    made.append(dst)


def _protected_tree(tmp_path: Path) -> tuple[Path, Path]:
    prot = tmp_path / "etc"
    (prot / "ssh").mkdir(parents=True)
    secret = make_file(prot / "ssh" / "shadow", label=SHADOW, mode=0o600)
    return prot, secret


def _refused(cfg_tmp: Path, prot: Path, disk: Path, match: str, **extra: object) -> None:
    mgr = SecurityManager(config(cfg_tmp, protected_paths=[str(prot)], **extra))
    with pytest.raises(SecurityError, match=match):
        mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(disk, "vda")])))
    assert DomainStore(cfg_tmp / "state").read("vm") is None


def test_hard_link_to_protected_file_refused(tmp_path: Path) -> None:
    prot, secret = _protected_tree(tmp_path)
    before = state(secret)
    (tmp_path / "x").mkdir()
    link = tmp_path / "x" / "disk.img"
    os.link(secret, link)
    _refused(tmp_path, prot, link, r"refusing to label .*disk.img: .* has 2 hard links")
    assert state(secret) == before


def test_hard_link_refused_even_when_allowed_if_inode_is_protected(tmp_path: Path) -> None:
    """With allow_hard_links, a link to a file under a protected *directory* name is
    still caught when the protected entry is the file itself (by device and inode)."""
    _prot, secret = _protected_tree(tmp_path)
    link = tmp_path / "disk.img"
    os.link(secret, link)
    before = state(secret)
    _refused(tmp_path, secret, link, "is the protected path", allow_hard_links=True)
    assert state(secret) == before


def test_hard_link_allowed_when_configured(tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", uid=1000, gid=1000)
    os.link(img, tmp_path / "b.img")
    mgr = SecurityManager(config(tmp_path, allow_hard_links=True))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
    mgr.restore_domain("vm")
    assert svirt_xattrs(img) == []


def test_bind_mount_of_protected_tree_refused(tmp_path: Path, mounts: list[Path]) -> None:
    prot, secret = _protected_tree(tmp_path)
    before = state(secret)
    where = tmp_path / "images"
    where.mkdir()
    bind(prot, where, mounts)
    _refused(tmp_path, prot, where / "ssh" / "shadow", "which is the protected path")
    assert state(secret) == before


def test_bind_mount_of_protected_subtree_refused(tmp_path: Path, mounts: list[Path]) -> None:
    prot, secret = _protected_tree(tmp_path)
    before = state(secret)
    where = tmp_path / "images"
    where.mkdir()
    bind(prot / "ssh", where, mounts)
    _refused(tmp_path, prot, where / "shadow", "is mounted from .*, under the protected path")
    assert state(secret) == before


def test_bind_mount_of_protected_file_refused(tmp_path: Path, mounts: list[Path]) -> None:
    prot, secret = _protected_tree(tmp_path)
    before = state(secret)
    disk = make_file(tmp_path / "disk.img")
    bind(secret, disk, mounts)
    _refused(tmp_path, prot, disk, "under the protected path")
    assert state(secret) == before


def test_protected_entry_that_is_a_symlink_or_holds_dotdot(tmp_path: Path) -> None:
    prot, secret = _protected_tree(tmp_path)
    alias = tmp_path / "alias"
    alias.symlink_to(prot)
    _refused(tmp_path, alias, secret, "under the protected path")
    dotted = tmp_path / "x" / ".." / "etc"
    _refused(tmp_path, dotted, secret, "under the protected path")


def test_state_database_is_never_a_disk(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    db = tmp_path / "state" / "svirt.db"
    before = state(db)
    with pytest.raises(SecurityError, match=r"under the protected path .*state"):
        mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(db, "vda")])))
    assert state(db) == before


def test_state_directory_private(tmp_path: Path) -> None:
    """0700 for the state directory and its subdirectories, 0600 for its files: no
    local user reads another domain's XML."""
    mgr = SecurityManager(config(tmp_path))
    img = make_file(tmp_path / "a.img", uid=1000, gid=1000)
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
    try:
        root = tmp_path / "state"
        for dirpath, _dirs, filenames in os.walk(root):
            assert os.stat(dirpath).st_mode & 0o777 == 0o700, dirpath
            for f in filenames:
                st = os.lstat(os.path.join(dirpath, f))
                assert st.st_mode & 0o077 == 0, (f, oct(st.st_mode))
                assert st.st_uid == 0
    finally:
        mgr.restore_domain("vm")


def test_no_xattr_filesystem_says_what_happens(
    tmp_path: Path, mounts: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """ramfs has no xattrs: the owner cannot be remembered. 653d5a9 chowned in silence
    and gave the file to root:root at restore; now both steps say so."""
    ram = tmp_path / "ram"
    ram.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(ram)], check=True)
    mounts.append(ram)
    img = ram / "a.img"
    img.write_bytes(b"x")
    os.chown(img, 1001, 1001)
    os.chmod(img, 0o600)
    mgr = SecurityManager(config(tmp_path))
    mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
    assert "its owner 1001:1001 cannot be remembered" in caplog.text
    mgr.restore_domain("vm")
    assert "original owner was not remembered (no xattr support): set to root:root" in caplog.text
