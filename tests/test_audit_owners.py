"""Which running VM owns a category set, from svirt's and libvirt's live XML files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from svirt.audit.owners import domain_of_pid, live_domain_files, load_live_domains, owners_of
from svirt.context import Level
from test_audit_explain import live_xml

DATA = Path(__file__).parent / "data" / "audit"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    state, run = tmp_path / "state", tmp_path / "run"
    (state / "domains").mkdir(parents=True)
    run.mkdir()
    (state / "domains" / "web.xml").write_text(
        live_xml("web", "system_u:system_r:svirt_t:s0:c10,c20", tmp_path / "web.qcow2", pid=100)
    )
    (run / "db.xml").write_text(
        live_xml("db", "system_u:system_r:svirt_t:s0:c30,c40", tmp_path / "db.qcow2", pid=200)
    )
    (run / "ol810.xml").write_text(
        (DATA / "ol810_live.xml").read_text().replace("@IMAGES@", "/img")
    )
    (run / "half-written.xml").write_text("<domstatus state='running'><domain type='kvm'>")
    (run / "not-xml.txt").write_text("ignored")
    return state, run


def test_loads_both_sources_and_skips_bad_files(
    dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    state, run = dirs
    assert [o for o, _ in live_domain_files(state, run)] == [
        "svirt",
        "libvirt",
        "libvirt",
        "libvirt",
    ]
    with caplog.at_level(logging.DEBUG, logger="svirt.audit.owners"):
        domains = load_live_domains(state, run)
    assert sorted((d.name, d.origin, d.pid) for d in domains) == [
        ("db", "libvirt", 200),
        ("ol810", "libvirt", 467192),
        ("web", "svirt", 100),
    ]
    assert any("half-written.xml" in r.getMessage() for r in caplog.records)
    ol810 = next(d for d in domains if d.name == "ol810")
    assert ol810.seclabel_type == "static" and ol810.relabel is False
    assert ol810.disks == ("/img/ol810.qcow2",)
    assert ol810.categories == frozenset({392, 662})


def test_owners_by_context_level_or_set(dirs: tuple[Path, Path]) -> None:
    domains = load_live_domains(*dirs)
    names = lambda found: [d.name for d in found]  # noqa: E731
    assert names(owners_of("system_u:object_r:svirt_image_t:s0:c30,c40", domains)) == ["db"]
    assert names(owners_of("system_u:system_r:svirt_t:s0:c392,c662", domains)) == ["ol810"]
    assert names(owners_of(Level.parse("s0:c10,c20"), domains)) == ["web"]
    assert names(owners_of(frozenset({10, 20}), domains)) == ["web"]
    # a subset is not ownership (that file is shared with, or dominated by, the VM)
    assert owners_of("system_u:object_r:svirt_image_t:s0:c10", domains) == []
    # s0 (shared and read-only media) belongs to nobody
    assert owners_of("system_u:object_r:svirt_image_t:s0", domains) == []
    assert owners_of("not a context", domains) == []
    assert domain_of_pid(200, domains) is not None and domain_of_pid(7, domains) is None


def test_missing_directories_mean_no_domains(tmp_path: Path) -> None:
    assert load_live_domains(tmp_path / "no", tmp_path / "neither") == []
