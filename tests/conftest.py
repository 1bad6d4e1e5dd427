"""Shared fixtures. Tests run as root on a kernel with SELinux compiled in but inactive:
file labels (security.selinux) and trusted.* xattrs are real; process labels are not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from svirt.conf import Config, config_from_mapping

DATA = Path(__file__).parent / "data"
SELINUX_CONF = DATA / "selinux.conf"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def selinux_config(tmp_path: Path) -> Config:
    """The SELinux driver named explicitly, runtime state under the test's tmp dir."""
    return config_from_mapping(
        {"security_driver": ["selinux"], "state_dir": str(tmp_path / "state")},
        source="<test>",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="svirt's tests need root (trusted.* xattrs, chown)")
        for item in items:
            item.add_marker(skip)
