"""Start, stop, start again in one process, verify, stop (issue 14, found by a helper):
stop warned "the remembered label ... was erased while svirt domain 'vm1' used it"
although the xattrs were there. The cause was not the message: the second monitor was
forked from a process holding state-database connections, so it inherited sqlite's
in-memory lock bookkeeping without the POSIX locks; once verify's garbage collection
closed this process's last connection, sqlite here saw no other user, deleted the WAL,
and every write the monitor committed (its restore, the record's removal, the kept
originals' removal) was lost. stop then found the domain still "running", restored it a
second time, and the second recall found the xattrs the monitor had already recalled
gone. Real QEMU, real files and xattrs, the real policy; no fake."""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import svirt
from adversarial.vmutil import disk, image, image_dir, stop_all, vm_xml
from fsutil import config, state
from svirt.conf import Config
from svirt.domain import parse_domain
from svirt.launch.lifecycle import erased_memory, start_domain, stop_domain
from svirt.security.manager import SecurityManager
from svirt.security.remember import xattr_names

pytestmark = [pytest.mark.qemu, pytest.mark.policy]

ERASED = "was erased while svirt domain 'vm1' used it"


@pytest.fixture
def imgdir() -> Iterator[Path]:
    with image_dir() as d:
        yield d


def _db_rows(cfg: Config, table: str) -> list[tuple[object, ...]]:
    """What another process sees in the state database (its own, fresh connection)."""
    conn = sqlite3.connect(f"file:{cfg.state_dir / 'svirt.db'}?mode=ro", uri=True)
    try:
        return list(conn.execute(f"SELECT * FROM {table}"))
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("mode", "held"),
    [("on", False), ("off", True)],
    ids=["identity-on-garbage-connections", "identity-off-held-connection"],
)
def test_restart_verify_stop_tells_no_erasure_and_a_real_one_is_caught(
    imgdir: Path, mode: str, held: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """``held``: the caller keeps a connection of its own open across the start (a
    library user's manager) and closes it while the VM runs; else only the garbage
    connections stop left behind are open."""
    cfg = config(imgdir, vm_identity=mode)
    a = image(imgdir, "a.img", uid=1001, gid=1001)
    before = state(a)
    xml = vm_xml("vm1", [disk(a, "vda")])
    caplog.set_level(logging.WARNING)
    try:
        start_domain(cfg, parse_domain(xml))
        stop_domain(cfg, "vm1", force=True, timeout=2.0)
        assert state(a) == before
        # This process now holds state-database connections (stop's, or the caller's):
        # the next monitor must not inherit sqlite's state of them.
        mine = SecurityManager(cfg).conn if held else None
        start_domain(cfg, parse_domain(xml))
        label_xattr = xattr_names("selinux")[0]
        assert os.getxattr(a, label_xattr)  # remembered, as libvirt does
        report = svirt.Host(cfg).verify()
        assert [d.name for d in report.domains] == ["vm1"]
        if mine is not None:
            mine.close()
        gc.collect()  # what verify's allocations did: this process's connections close
        assert erased_memory(cfg, "vm1") == []
        stop_domain(cfg, "vm1", force=True, timeout=2.0)
        assert not [r.getMessage() for r in caplog.records if ERASED in r.getMessage()]
        # The monitor's commit is there for everyone: no record, no kept original.
        assert _db_rows(cfg, "domains") == [] and _db_rows(cfg, "kept_originals") == []
        assert state(a) == before

        # The genuine case still warns: the xattrs really erased under the running VM
        # (libvirt's failed start on a file in use does this) are noticed, and the
        # original comes back from svirt's own copy.
        start_domain(cfg, parse_domain(xml))
        for name in xattr_names("selinux"):
            os.removexattr(a, name)
        warned = erased_memory(cfg, "vm1")
        assert len(warned) == 1 and ERASED in warned[0], warned
        assert "the original label is system_u:object_r:virt_image_t:s0" in warned[0]
        stop_domain(cfg, "vm1", force=True, timeout=2.0)
        assert _db_rows(cfg, "domains") == [] and _db_rows(cfg, "kept_originals") == []
        assert state(a) == before
        assert not any(n.startswith("trusted.libvirt.security.") for n in os.listxattr(a))
    finally:
        stop_all(cfg)
