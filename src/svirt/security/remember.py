"""Remembered original labels and owners, byte-compatible with libvirt (spec §7).

Three xattrs per driver (``selinux``, ``dac``) in the ``trusted`` namespace:

- ``trusted.libvirt.security.<drv>``: the original label (``+uid:+gid`` for DAC), no NUL;
- ``trusted.libvirt.security.ref_<drv>``: the reference count, unsigned decimal;
- ``trusted.libvirt.security.timestamp_<drv>``: the host boot time, decimal seconds.

:func:`remember` and :func:`recall` are libvirt's ``SetRemembered``/``GetRemembered``.
Where libvirt returns -2 ("xattrs unsupported or absent") these return ``None`` /
:data:`NOT_REMEMBERED`; errors raise. Paths may be ``/proc/self/fd/N`` so callers can act
on the inode they checked; ``name`` is then the path messages show.
"""

from __future__ import annotations

import errno
import logging
import os

from svirt.errors import PREFIX_INTERNAL, LabelSystemError, SecurityError
from svirt.host import remembered as codec
from svirt.host.remembered import (
    DRIVERS,
    XATTR_PREFIX,
    Remembered,
    is_this_boot,
    xattr_names,
)

__all__ = [
    "DRIVERS",
    "IN_USE",
    "NOT_REMEMBERED",
    "XATTR_PREFIX",
    "Remembered",
    "boot_time",
    "clear_remembered",
    "erased_warning",
    "is_this_boot",
    "read_remembered",
    "recall",
    "reinstate",
    "remember",
    "take_back",
    "xattr_names",
]

log = logging.getLogger(__name__)

_UNSUPPORTED = codec.UNSUPPORTED


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NOT_REMEMBERED = _Marker("NOT_REMEMBERED")  # libvirt's -2: restore to the default
IN_USE = _Marker("IN_USE")  # refcount still above zero: do not restore


def boot_time() -> int:
    """The host boot time (the codec's), as the error libvirt reports when it has none."""
    try:
        return codec.boot_time()
    except codec.BootTimeError:
        raise SecurityError(PREFIX_INTERNAL + "Unable to get host boot time") from None


def _get(path: str, name: str) -> str | None:
    return codec.get_xattr(path, name)


def _set(path: str, name: str, value: str, shown: str | None = None) -> None:
    try:
        os.setxattr(path, name, value.encode())
    except OSError as exc:
        raise LabelSystemError(
            f"Unable to set XATTR {name} on {shown or path}: {exc.strerror}", exc.errno
        ) from exc


def _remove(path: str, name: str, shown: str | None = None) -> None:
    try:
        os.removexattr(path, name)
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise LabelSystemError(
                f"Unable to remove XATTR {name} on {shown or path}: {exc.strerror}", exc.errno
            ) from exc


def clear_remembered(path: str, driver: str, *, name: str | None = None) -> None:
    """Remove all three xattrs of a driver (absent ones are fine)."""
    for xattr in xattr_names(driver):
        _remove(path, xattr, name)


def _get_or_raise(path: str, name: str, shown: str | None = None) -> str | None:
    try:
        return _get(path, name)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            raise
        raise LabelSystemError(
            f"Unable to get XATTR {name} on {shown or path}: {exc.strerror}", exc.errno
        ) from exc


def _validate_timestamp(path: str, driver: str, shown: str) -> bool:
    """True when the remembered state is from this boot. A stale (or missing) timestamp
    removes all three xattrs, as libvirt does, and returns False."""
    _, _, ts_name = xattr_names(driver)
    ts = _get_or_raise(path, ts_name, shown)
    if ts is not None and is_this_boot(ts):
        return True
    log.warning("Invalid XATTR timestamp detected on %s secdriver=%s", shown, driver)
    clear_remembered(path, driver, name=shown)
    return False


def _parse_count(value: str, path: str) -> int:
    if not value.isdigit():
        raise SecurityError(PREFIX_INTERNAL + f"malformed refcount {value} on {path}")
    return int(value)


def remember(path: str, driver: str, current_label: str, *, name: str | None = None) -> int | None:
    """Count one more user of ``path``; on the first, store its current label and the
    boot time. Returns the new count, or None where the filesystem has no xattrs."""
    shown = name or path
    label_name, ref_name, ts_name = xattr_names(driver)
    try:
        ref = _get_or_raise(path, ref_name, shown)
        if ref is not None and not _validate_timestamp(path, driver, shown):
            ref = None
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return None
        raise
    count = (_parse_count(ref, shown) if ref is not None else 0) + 1
    try:
        if count == 1:
            _set(path, label_name, current_label, shown)
            _set(path, ts_name, str(boot_time()), shown)
        _set(path, ref_name, str(count), shown)
    except LabelSystemError as exc:
        if exc.errno in _UNSUPPORTED:
            return None
        raise
    return count


def recall(path: str, driver: str, *, name: str | None = None) -> str | _Marker:
    """Count one user fewer. Returns the original label when this was the last user
    (and removes the xattrs), :data:`IN_USE` when users remain, or
    :data:`NOT_REMEMBERED` when nothing (valid) is remembered."""
    shown = name or path
    label_name, ref_name, ts_name = xattr_names(driver)
    try:
        ref = _get_or_raise(path, ref_name, shown)
        if ref is None or not _validate_timestamp(path, driver, shown):
            return NOT_REMEMBERED
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return NOT_REMEMBERED
        raise
    count = _parse_count(ref, shown) - 1
    if count > 0:
        _set(path, ref_name, str(count), shown)
        return IN_USE
    _remove(path, ref_name, shown)
    label = _get_or_raise(path, label_name, shown)
    _remove(path, label_name, shown)
    _remove(path, ts_name, shown)
    if label is None:
        raise LabelSystemError(f"Unable to get XATTR {label_name} on {shown}", errno.ENODATA)
    return label


def read_remembered(path: str, driver: str) -> Remembered | None:
    """The driver's remembered state on ``path`` (the codec's), or None when it has none."""
    return codec.read_family(path, driver)


def take_back(path: str, driver: str, *, name: str | None = None) -> None:
    """Undo one :func:`remember` whose change did not happen (a refused or failed set).
    Unlike libvirt, this never relabels or chowns the file: nothing was changed, and
    doing so could disturb the other user the reference count is about."""
    try:
        recall(path, driver, name=name)
    except (OSError, SecurityError):
        log.warning(
            "Unable to restore label on '%s'. XATTRs might have been left in inconsistent state.",
            name or path,
        )


def reinstate(path: str, driver: str, original: str, *, name: str | None = None) -> None:
    """Write the remembered state back with one user (this boot): svirt's own copy of an
    original whose xattrs someone else erased while svirt's domain used the file."""
    shown = name or path
    label_name, ref_name, ts_name = xattr_names(driver)
    _set(path, label_name, original, shown)
    _set(path, ts_name, str(boot_time()), shown)
    _set(path, ref_name, "1", shown)


def erased_warning(path: str, driver: str, domain: str, original: str) -> str:
    """The one text saying that libvirt erased what svirt remembered (README quotes it)."""
    what = "owner" if driver == "dac" else "label"
    return (
        f"the remembered {what} of {path} ({XATTR_PREFIX}{driver}) was erased while svirt "
        f"domain '{domain}' used it (libvirt removes these xattrs when one of its domains "
        f"fails to start on, or stops using, a file another domain uses); svirt kept its "
        f"own copy: the original {what} is {original}"
    )
