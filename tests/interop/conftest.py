"""Fixtures of the interop suite: one libvirtd per session (its start costs seconds), and
per test an svirt configuration and images in the namespace's temporary directory."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_ns import LibvirtNamespace, Svirt

pytestmark = pytest.mark.libvirt


@pytest.fixture(scope="session")
def libvirt() -> Iterator[LibvirtNamespace]:
    if not (shutil.which("libvirtd") or os.path.exists("/usr/sbin/libvirtd")):
        pytest.fail("libvirt is not installed: run scripts/setup.sh")
    ns = LibvirtNamespace()
    try:
        ns.open()
        ns.start_daemons()
        yield ns
    finally:
        ns.close()


@pytest.fixture
def lv(libvirt: LibvirtNamespace) -> Iterator[LibvirtNamespace]:
    """The session's libvirt, restarted if a test killed it; every domain of the test
    destroyed at its end."""
    if libvirt.libvirtd is None or libvirt.libvirtd.poll() is not None:
        libvirt.start_daemons()
    yield libvirt
    libvirt.destroy_all()


@pytest.fixture(params=["svirt-qemu", "libvirt-qemu"], ids=["own-user", "libvirt-user"])
def svirt_user(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def work(lv: LibvirtNamespace) -> Iterator[Path]:
    d = lv.root / f"t{time.monotonic_ns()}"
    (d / "images").mkdir(parents=True)
    d.chmod(0o755)
    (d / "images").chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def svirt(lv: LibvirtNamespace, work: Path, svirt_user: str) -> Iterator[Svirt]:
    sv = Svirt(lv, work, svirt_user)
    yield sv
    for name in sv.started:
        sv("stop", name, "--force")
