"""libvirt's NFS hint, and the filesystem lookup behind it."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from fsutil import config, disk_xml, domain_xml, make_file
from svirt.domain import parse_domain
from svirt.host.namespace import filesystem_type
from svirt.security import selinux as selinux_mod
from svirt.security.manager import SecurityManager


def test_filesystem_type_takes_the_deepest_mount(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "40 21 0:45 / /var/lib/libvirt/images rw shared:20 - nfs4 srv:/images rw\n"
        "41 40 0:46 / /var/lib/libvirt/images/local rw shared:21 - xfs /dev/vdb rw\n"
        "42 21 0:47 / /mnt/with\\040space rw - tmpfs tmpfs rw\n"
    )
    assert filesystem_type("/var/lib/libvirt/images/a.qcow2", info) == "nfs4"
    assert filesystem_type("/var/lib/libvirt/images/local/b", info) == "xfs"
    assert filesystem_type("/var/lib/libvirt/imagesX/c", info) == "ext4"
    assert filesystem_type("/mnt/with space/d", info) == "tmpfs"
    assert filesystem_type("/x", tmp_path / "missing") is None


def test_unsupported_label_on_nfs_suggests_virt_use_nfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem without xattrs (ramfs, real here) that the lookup reports as NFS (a
    fake: no NFS server can exist in this sandbox) gets libvirt's hint, not an error."""
    mnt = tmp_path / "nfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], check=True)
    try:
        img = make_file(mnt / "a.img", label=None)
        monkeypatch.setattr(selinux_mod, "filesystem_type", lambda path: "nfs4")
        mgr = SecurityManager(config(tmp_path, dynamic_ownership=False))
        with caplog.at_level(logging.INFO, logger="svirt.security.selinux"):
            mgr.label_domain(parse_domain(domain_xml("vm", [disk_xml(img, "vda")])))
        assert "not supported. Consider setting virt_use_nfs" in caplog.text
        mgr.restore_domain("vm")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
