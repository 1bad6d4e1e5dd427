"""Transactions: queued label operations, metadata locks, journal, rollback, recovery.

A transaction (libvirt-security-spec §9.2–§9.3, made crash-safe and symlink-safe):

1. resolves and opens every path once (``O_PATH``) and refuses paths that resolve under
   a protected directory; every later check and change acts on that pinned inode;
2. takes libvirt's metadata locks (sorted paths, an exclusive POSIX record lock on byte
   1, length 1, retried every millisecond for up to 10 s), so svirt and libvirt
   processes serialise on shared files;
3. records, durably and before any mutation, the full security state of every file it
   will touch (label, owner, ACL, remembered xattrs) in the intent journal;
4. applies the operations in order. A labelling transaction stops at the first failure
   and puts every touched file back to its recorded state, in reverse order; a restore
   transaction is best effort and reports every failure;
5. closes the journal entry and unlocks.

A crash anywhere leaves an open journal entry whose process is gone: :func:`recover`
puts those files back exactly as they were. Unlike libvirt's rollback (a restore with
recall), putting back the recorded state cannot erase another domain's remembered
label (the libvirt defect described in platform.md).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from svirt.errors import LabelSystemError, SecurityError, SvirtError
from svirt.host.files import FileState, restore_state, snapshot
from svirt.security.driver import LabelOp, Outcome, SecurityDriver
from svirt.state.journal import Journal

__all__ = ["MetadataLocks", "RecoveryAction", "Transaction", "TransactionResult", "recover"]

log = logging.getLogger(__name__)
_LOCK_RETRIES = 10_000  # 1 ms apart: about 10 s, as libvirt


class MetadataLocks:
    """libvirt-compatible metadata locks on a set of paths (spec §9.3).

    ``opener`` maps a path to what should be opened for it (the pinned inode's
    ``/proc/self/fd/N``); the sort order is that of the paths, as libvirt's."""

    def __init__(self, paths: Sequence[str], opener: Mapping[str, str] | None = None) -> None:
        self.paths = sorted(set(paths))
        self.opener = dict(opener or {})
        self.fds: dict[str, int] = {}

    def __enter__(self) -> MetadataLocks:
        try:
            for path in self.paths:
                fd = self._open(path, self.opener.get(path, path))
                if fd is not None:
                    self._lock(path, fd)
                    self.fds[path] = fd
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _open(path: str, target: str) -> int | None:
        try:
            st = os.stat(target)
        except OSError:
            return None  # a path that does not exist is simply not locked
        if stat.S_ISDIR(st.st_mode):
            return None
        try:
            return os.open(target, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.ENXIO) or stat.S_ISSOCK(st.st_mode):
                return None
            if exc.errno in (errno.EACCES, errno.EPERM):
                return None  # a shared FS with root squash: not remembered, not fatal
            raise SecurityError(f"unable to open {path}: {exc.strerror}") from None

    @staticmethod
    def _lock(path: str, fd: int) -> None:
        for _ in range(_LOCK_RETRIES):
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1, os.SEEK_SET)
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    break
                time.sleep(0.001)
        os.close(fd)
        raise SecurityError(f"unable to lock {path} for metadata change")

    def locked(self, path: str) -> bool:
        return path in self.fds

    def release(self) -> None:
        for path, fd in self.fds.items():
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1, os.SEEK_SET)
                os.close(fd)
            except OSError as exc:
                log.warning("unable to unlock %s: %s", path, exc.strerror)
        self.fds.clear()


class _Pins:
    """Each path resolved and opened once (``O_PATH``), so every check and change acts on
    the inode that was checked: a file swapped for a symlink mid-way cannot redirect a
    relabel or chown. A path that is a symlink when first seen is followed (as libvirt
    follows symlinked images); one that is not is opened with ``O_NOFOLLOW``, and a
    change of identity between the look and the open is refused. Whatever a path
    resolves to must not lie under a protected path."""

    def __init__(self, protected: Sequence[str]) -> None:
        self.protected = protected
        self.fds: dict[str, int] = {}
        self.targets: dict[str, str] = {}  # path -> /proc/self/fd/N
        self.real: dict[str, str] = {}  # path -> canonical path of the pinned inode

    def pin(self, path: str) -> None:
        if path in self.fds:
            return
        try:
            lst = os.lstat(path)
        except OSError as exc:
            # Nothing is ever done by path alone: an operation runs on a pinned inode.
            raise LabelSystemError(
                f"Cannot access storage file '{path}': {exc.strerror}", exc.errno
            ) from None
        follow = stat.S_ISLNK(lst.st_mode)
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise SecurityError(f"unable to open {path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not follow and (
            stat.S_ISLNK(st.st_mode) or (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino)
        ):
            os.close(fd)
            raise SecurityError(f"refusing to label {path}: it was replaced while being labelled")
        real = os.readlink(f"/proc/self/fd/{fd}")
        for prot in self.protected:
            if real == prot or real.startswith(prot.rstrip("/") + "/"):
                os.close(fd)
                raise SecurityError(
                    f"refusing to label {path}: {real} is under the protected path {prot}"
                )
        self.fds[path] = fd
        self.targets[path] = f"/proc/self/fd/{fd}"
        self.real[path] = real

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


@dataclass
class TransactionResult:
    outcomes: list[tuple[LabelOp, Outcome]] = field(default_factory=list)
    errors: list[tuple[LabelOp, SvirtError]] = field(default_factory=list)


class Transaction:
    """Runs a list of operations against a driver table.

    ``remember`` is qemu.conf's ``remember_owner``: with it, metadata locks are taken and
    an operation on a path that could not be locked does not remember or recall.
    ``protected`` lists directories nothing may be labelled under. ``step_hook`` is
    called after each applied operation with its index; tests use it to inject a crash
    at every step.
    """

    def __init__(
        self,
        drivers: Mapping[str, SecurityDriver],
        journal: Journal | None,
        *,
        remember: bool = True,
        protected: Sequence[str] = (),
        step_hook: Callable[[int], None] | None = None,
    ) -> None:
        self.drivers = drivers
        self.journal = journal
        self.remember = remember
        self.protected = tuple(protected)
        self.step_hook = step_hook

    @staticmethod
    def _effective(op: LabelOp, locks: MetadataLocks | None) -> LabelOp:
        if op.remember and not (locks is not None and locks.locked(op.path)):
            return LabelOp(op.driver, op.action, op.path, op.value, False, op.owner, op.readonly)
        return op

    def run(
        self, domain: str, ops: Sequence[LabelOp], *, best_effort: bool = False
    ) -> TransactionResult:
        """Apply ``ops``. Without ``best_effort`` the first failure rolls everything back
        and is raised; with it, every operation is tried and failures are returned."""
        result = TransactionResult()
        if not ops:
            return result
        pins = _Pins(self.protected)
        try:
            unusable: dict[str, SecurityError] = {}
            for op in ops:
                exc = unusable.get(op.path)
                if exc is None:
                    try:
                        pins.pin(op.path)
                        continue
                    except SecurityError as pin_error:
                        if not best_effort:
                            raise
                        log.warning("%s", pin_error)
                        exc = unusable[op.path] = pin_error
                if not (isinstance(exc, LabelSystemError) and exc.errno == errno.ENOENT):
                    result.errors.append((op, exc))  # a file that is gone has nothing to restore
            ops = [op for op in ops if op.path not in unusable]
            if not ops:
                return result
            locks = None
            if self.remember:
                remembered = [op.path for op in ops if op.remember and op.path in pins.targets]
                locks = MetadataLocks(remembered, pins.targets)
                locks.__enter__()
            try:
                self._run(domain, ops, pins, locks, result, best_effort)
            finally:
                if locks is not None:
                    locks.release()
        finally:
            pins.close()
        return result

    def _run(
        self,
        domain: str,
        ops: Sequence[LabelOp],
        pins: _Pins,
        locks: MetadataLocks | None,
        result: TransactionResult,
        best_effort: bool,
    ) -> None:
        before = {path: snapshot(target) for path, target in pins.targets.items()}
        tx = None
        if self.journal is not None:
            files = [(pins.real[p], st) for p, st in before.items()]
            tx = self.journal.begin(domain, ops[0].action.value, files)
        touched: list[str] = []
        try:
            for i, raw_op in enumerate(ops):
                op = self._effective(raw_op, locks)
                if op.path not in touched:
                    touched.append(op.path)
                try:
                    outcome = self.drivers[op.driver].apply(op, pins.targets[op.path])
                except SvirtError as exc:
                    if not best_effort:
                        raise
                    log.warning("%s", exc)
                    result.errors.append((op, exc))
                    continue
                result.outcomes.append((op, outcome))
                if self.step_hook is not None:
                    self.step_hook(i)
        except BaseException:
            self._rollback(touched, before, pins.targets)
            if tx is not None and self.journal is not None:
                self.journal.finish(tx, "rolledback")
            raise
        if tx is not None and self.journal is not None:
            self.journal.finish(tx, "committed")

    @staticmethod
    def _rollback(
        touched: list[str], before: Mapping[str, FileState], targets: Mapping[str, str]
    ) -> None:
        for path in reversed(touched):
            state = before.get(path)
            if state is None:
                continue
            try:
                restore_state(targets[path], state)
                log.debug("rolled back %s", path)
            except OSError as exc:
                log.warning(
                    "Unable to restore label on '%s'. XATTRs might have been left in "
                    "inconsistent state. (%s)",
                    path,
                    exc.strerror,
                )


@dataclass(frozen=True, slots=True)
class RecoveryAction:
    tx: int
    domain: str
    path: str
    what: str  # "restore", "unchanged", "replaced" (a different inode now), "missing"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(journal: Journal, *, apply: bool = True) -> list[RecoveryAction]:
    """Roll back every transaction left open by a process that no longer exists."""
    actions: list[RecoveryAction] = []
    for tx in journal.open_transactions():
        if tx.pid != os.getpid() and _pid_alive(tx.pid):
            continue
        for entry in reversed(journal.entries(tx.id)):
            try:
                now = snapshot(entry.path)
            except OSError:
                actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "missing"))
                continue
            if (now.dev, now.ino) != (entry.before.dev, entry.before.ino):
                # Never write through a path that now names another file.
                actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "replaced"))
                continue
            if now == entry.before:
                actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "unchanged"))
                continue
            actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "restore"))
            if apply:
                restore_state(entry.path, entry.before)
        if apply:
            journal.finish(tx.id, "rolledback")
    return actions
