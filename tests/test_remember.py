"""Remembered labels (libvirt-security-spec §7): real ``trusted.libvirt.security.*`` xattrs
on real files in tmp_path, and on a real ramfs mount for "no xattr support".

The byte-level expectations come from §7.1 and from what libvirt 9.0 wrote on this machine
kind (platform.md): values without a trailing NUL, the refcount in decimal, the timestamp
equal to ``btime`` of /proc/stat.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svirt.errors import LabelSystemError, SecurityError
from svirt.security import remember as rem

ORIG = "system_u:object_r:user_tmp_t:s0"
LABEL = "trusted.libvirt.security.selinux"
REF = "trusted.libvirt.security.ref_selinux"
TS = "trusted.libvirt.security.timestamp_selinux"


def btime() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise AssertionError("no btime in /proc/stat")


def xattrs(path: Path | str) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith(rem.XATTR_PREFIX)}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    p = tmp_path / "disk.img"
    p.write_bytes(b"")
    return p


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem without any xattr support (every xattr call: EOPNOTSUPP)."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_names_are_libvirts() -> None:
    assert rem.xattr_names("selinux") == (LABEL, REF, TS)
    assert rem.xattr_names("dac") == (
        "trusted.libvirt.security.dac",
        "trusted.libvirt.security.ref_dac",
        "trusted.libvirt.security.timestamp_dac",
    )


def test_boot_time_is_proc_stat_btime() -> None:
    assert rem.boot_time() == btime()


def test_first_remember_writes_three_xattrs_as_libvirt(img: Path) -> None:
    assert rem.remember(str(img), "selinux", ORIG) == 1
    assert xattrs(img) == {
        LABEL: ORIG.encode(),  # no trailing NUL, unlike security.selinux
        REF: b"1",
        TS: str(btime()).encode(),
    }


def test_second_remember_counts_and_keeps_the_first_original(img: Path) -> None:
    rem.remember(str(img), "selinux", ORIG)
    assert rem.remember(str(img), "selinux", "system_u:object_r:svirt_image_t:s0:c1,c2") == 2
    assert xattrs(img)[REF] == b"2"
    assert xattrs(img)[LABEL] == ORIG.encode()


def test_recall_counts_down_then_returns_the_original_and_cleans_up(img: Path) -> None:
    rem.remember(str(img), "selinux", ORIG)
    rem.remember(str(img), "selinux", "x_u:object_r:svirt_image_t:s0:c1,c2")
    assert rem.recall(str(img), "selinux") is rem.IN_USE
    assert xattrs(img)[REF] == b"1"
    assert rem.recall(str(img), "selinux") == ORIG
    assert xattrs(img) == {}


def test_recall_of_a_never_remembered_file_changes_nothing(img: Path) -> None:
    assert rem.recall(str(img), "selinux") is rem.NOT_REMEMBERED
    assert xattrs(img) == {}


def test_drivers_are_independent(img: Path) -> None:
    rem.remember(str(img), "selinux", ORIG)
    assert rem.remember(str(img), "dac", "+0:+0") == 1
    assert rem.recall(str(img), "dac") == "+0:+0"
    assert set(xattrs(img)) == {LABEL, REF, TS}


def test_recall_reads_what_libvirt_9_wrote(img: Path) -> None:
    # The exact xattrs libvirt 9.0 left on a writable top image (platform.md).
    os.setxattr(img, "trusted.libvirt.security.dac", b"+0:+0")
    os.setxattr(img, "trusted.libvirt.security.ref_dac", b"1")
    os.setxattr(img, "trusted.libvirt.security.timestamp_dac", str(btime()).encode())
    assert rem.recall(str(img), "dac") == "+0:+0"
    assert xattrs(img) == {}


def test_libvirt_5_timestamp_with_host_uuid_is_this_boot(img: Path) -> None:
    os.setxattr(img, LABEL, ORIG.encode())
    os.setxattr(img, REF, b"1")
    os.setxattr(img, TS, f"c7a5fdbd-edaf-9455-926a-d65c16db1809-{btime()}".encode())
    assert rem.remember(str(img), "selinux", "other_u:object_r:t:s0") == 2
    assert xattrs(img)[LABEL] == ORIG.encode()


@pytest.mark.parametrize(("delta", "valid"), [(0, True), (1, True), (-1, True), (2, False)])
def test_one_second_jitter_is_this_boot(delta: int, valid: bool) -> None:
    assert rem.is_this_boot(str(btime() + delta)) is valid
    assert rem.is_this_boot(f"00000000-0000-0000-0000-000000000000-{btime() + delta}") is valid


@pytest.mark.parametrize("value", ["", "abc", "12x", "-5", f"{btime()} extra"])
def test_garbage_timestamps_are_not_this_boot(value: str) -> None:
    assert rem.is_this_boot(value) is False


@pytest.mark.parametrize("timestamp", [b"1234567890", None], ids=["old-boot", "missing"])
def test_stale_state_is_discarded_on_remember(
    img: Path, timestamp: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    os.setxattr(img, LABEL, b"system_u:object_r:old_t:s0")
    os.setxattr(img, REF, b"7")
    if timestamp is not None:
        os.setxattr(img, TS, timestamp)
    with caplog.at_level(logging.WARNING):
        assert rem.remember(str(img), "selinux", ORIG) == 1
    assert f"Invalid XATTR timestamp detected on {img} secdriver=selinux" in caplog.text
    assert xattrs(img) == {LABEL: ORIG.encode(), REF: b"1", TS: str(btime()).encode()}


def test_stale_state_is_removed_on_recall(img: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.setxattr(img, LABEL, b"system_u:object_r:old_t:s0")
    os.setxattr(img, REF, b"1")
    os.setxattr(img, TS, str(btime() - 3600).encode())
    with caplog.at_level(logging.WARNING):
        assert rem.recall(str(img), "selinux") is rem.NOT_REMEMBERED
    assert "Invalid XATTR timestamp detected" in caplog.text
    assert xattrs(img) == {}


def test_timestamp_without_refcount_is_not_validated(img: Path) -> None:
    # libvirt validates the timestamp only when the refcount exists (spec §7.2).
    os.setxattr(img, TS, b"1")
    assert rem.recall(str(img), "selinux") is rem.NOT_REMEMBERED
    assert TS in xattrs(img)


@pytest.mark.parametrize("op", ["remember", "recall"])
def test_malformed_refcount_is_libvirts_error(img: Path, op: str) -> None:
    os.setxattr(img, LABEL, ORIG.encode())
    os.setxattr(img, REF, b"two")
    os.setxattr(img, TS, str(btime()).encode())
    with pytest.raises(SecurityError) as info:
        if op == "remember":
            rem.remember(str(img), "selinux", ORIG)
        else:
            rem.recall(str(img), "selinux")
    assert str(info.value) == f"internal error: malformed refcount two on {img}"
    assert xattrs(img)[REF] == b"two"  # nothing was changed


def test_recall_without_the_label_is_an_error(img: Path) -> None:
    os.setxattr(img, REF, b"1")
    os.setxattr(img, TS, str(btime()).encode())
    with pytest.raises(LabelSystemError, match=f"Unable to get XATTR {LABEL} on {img}"):
        rem.recall(str(img), "selinux")


def test_filesystem_without_xattrs_is_not_remembered(ramfs: Path) -> None:
    f = ramfs / "disk.img"
    f.write_bytes(b"")
    with pytest.raises(OSError) as probe:
        os.setxattr(f, REF, b"1")
    assert probe.value.errno == errno.EOPNOTSUPP  # the real thing, not a fake
    assert rem.remember(str(f), "selinux", ORIG) is None
    assert rem.recall(str(f), "selinux") is rem.NOT_REMEMBERED
    assert rem.read_remembered(str(f), "selinux") is None


def test_read_only_filesystem_write_error_is_reported(tmp_path: Path) -> None:
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    (src / "f").write_bytes(b"")
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(LabelSystemError) as info:
            rem.remember(str(ro / "f"), "selinux", ORIG)
        assert info.value.errno == errno.EROFS
        assert f"Unable to set XATTR {LABEL} on {ro / 'f'}" in str(info.value)
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_works_through_proc_self_fd(img: Path) -> None:
    fd = os.open(img, os.O_PATH)
    try:
        via = f"/proc/self/fd/{fd}"
        assert rem.remember(via, "selinux", ORIG) == 1
        assert xattrs(img)[REF] == b"1"
        assert rem.recall(via, "selinux") == ORIG
    finally:
        os.close(fd)
    assert xattrs(img) == {}


def test_messages_name_the_path_not_the_pinned_descriptor(
    img: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fd = os.open(img, os.O_PATH)
    try:
        via = f"/proc/self/fd/{fd}"
        os.setxattr(img, REF, b"9")
        os.setxattr(img, TS, b"1")
        with caplog.at_level(logging.WARNING):
            assert rem.recall(via, "selinux", name=str(img)) is rem.NOT_REMEMBERED
        assert f"Invalid XATTR timestamp detected on {img} secdriver=selinux" in caplog.text
        os.setxattr(img, REF, b"x")
        os.setxattr(img, TS, str(btime()).encode())
        with pytest.raises(SecurityError) as info:
            rem.remember(via, "selinux", ORIG, name=str(img))
        assert str(info.value) == f"internal error: malformed refcount x on {img}"
    finally:
        os.close(fd)


def test_read_remembered_reports_state_without_changing_it(img: Path) -> None:
    assert rem.read_remembered(str(img), "selinux") is None
    rem.remember(str(img), "selinux", ORIG)
    info = rem.read_remembered(str(img), "selinux")
    assert info == rem.Remembered(
        "selinux",
        (
            "trusted.libvirt.security.selinux",
            "trusted.libvirt.security.ref_selinux",
            "trusted.libvirt.security.timestamp_selinux",
        ),
        ORIG,
        1,
        "1",
        str(btime()),
        True,
    )
    assert info is not None and not info.stale
    os.setxattr(img, TS, b"1000")
    info = rem.read_remembered(str(img), "selinux")
    assert info is not None and info.stale
    assert xattrs(img)[TS] == b"1000"  # reading never cleans up


def test_clear_remembered_removes_all_three(img: Path) -> None:
    rem.remember(str(img), "selinux", ORIG)
    rem.clear_remembered(str(img), "selinux")
    rem.clear_remembered(str(img), "selinux")  # absent ones are fine
    assert xattrs(img) == {}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    labels=st.lists(
        st.sampled_from(["a_u:object_r:a_t:s0", "b_u:object_r:b_t:s0:c1,c2", "c_u:r:t:s0"]),
        min_size=1,
        max_size=6,
    ),
    driver=st.sampled_from(rem.DRIVERS),
)
def test_n_remembers_then_n_recalls_give_back_the_first_label(
    tmp_path: Path, labels: list[str], driver: str
) -> None:
    f = tmp_path / f"prop-{os.urandom(6).hex()}"
    f.write_bytes(b"")
    for i, label in enumerate(labels, start=1):
        assert rem.remember(str(f), driver, label) == i
    for left in range(len(labels) - 1, 0, -1):
        assert rem.recall(str(f), driver) is rem.IN_USE
        assert os.getxattr(f, f"{rem.XATTR_PREFIX}ref_{driver}") == str(left).encode()
    assert rem.recall(str(f), driver) == labels[0]
    assert xattrs(f) == {}
    assert rem.recall(str(f), driver) is rem.NOT_REMEMBERED
