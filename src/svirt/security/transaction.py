"""Transactions: queued label operations, metadata locks, journal, rollback, recovery.

A transaction (libvirt-security-spec §9.2–§9.3, made crash-safe):

1. takes libvirt's metadata locks on the paths (sorted, an exclusive POSIX record lock on
   byte 1, length 1, retried every millisecond for up to 10 s), so svirt and libvirt
   processes serialise on shared files;
2. records, durably and before any mutation, the full security state of every file it
   will touch (label, owner, ACL, remembered xattrs) in the intent journal;
3. applies the operations in order. A labelling transaction stops at the first failure
   and puts every touched file back to its recorded state, in reverse order; a restore
   transaction is best effort and reports every failure;
4. closes the journal entry and unlocks.

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

from svirt.errors import SecurityError, SvirtError
from svirt.host.files import FileState, restore_state, snapshot
from svirt.security.driver import Action, LabelOp, Outcome, SecurityDriver
from svirt.state.journal import Journal

__all__ = ["MetadataLocks", "RecoveryAction", "Transaction", "TransactionResult", "recover"]

log = logging.getLogger(__name__)
_LOCK_RETRIES = 10_000  # 1 ms apart: about 10 s, as libvirt


class MetadataLocks:
    """libvirt-compatible metadata locks on a set of paths (spec §9.3)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = sorted(set(paths))  # one global order avoids deadlocks
        self.fds: dict[str, int] = {}

    def __enter__(self) -> MetadataLocks:
        try:
            for path in self.paths:
                fd = self._open(path)
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
    def _open(path: str) -> int | None:
        try:
            st = os.stat(path)
        except OSError:
            return None  # a path that does not exist is simply not locked
        if stat.S_ISDIR(st.st_mode):
            return None
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
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


@dataclass
class TransactionResult:
    outcomes: list[tuple[LabelOp, Outcome]] = field(default_factory=list)
    errors: list[tuple[LabelOp, SvirtError]] = field(default_factory=list)


class Transaction:
    """Runs a list of operations against a driver table.

    ``remember`` is qemu.conf's ``remember_owner``: with it, metadata locks are taken and
    an operation on a path that could not be locked does not remember or recall.
    ``step_hook`` is called after each applied operation with its index; tests use it to
    inject a crash at every step.
    """

    def __init__(
        self,
        drivers: Mapping[str, SecurityDriver],
        journal: Journal | None,
        *,
        remember: bool = True,
        step_hook: Callable[[int], None] | None = None,
    ) -> None:
        self.drivers = drivers
        self.journal = journal
        self.remember = remember
        self.step_hook = step_hook

    def _effective(self, op: LabelOp, locks: MetadataLocks | None) -> LabelOp:
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
        paths = list(dict.fromkeys(op.path for op in ops))
        locks = MetadataLocks([op.path for op in ops if op.remember]) if self.remember else None
        if locks is not None:
            locks.__enter__()
        try:
            before: dict[str, FileState] = {}
            for p in paths:
                try:
                    before[p] = snapshot(p)
                except OSError:
                    pass  # it does not exist: applying will report that
            tx = (
                self.journal.begin(domain, ops[0].action.value, list(before.items()))
                if self.journal is not None
                else None
            )
            touched: list[str] = []
            try:
                for i, raw_op in enumerate(ops):
                    op = self._effective(raw_op, locks)
                    if op.path not in touched:
                        touched.append(op.path)
                    try:
                        outcome = self.drivers[op.driver].apply(op)
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
                self._rollback(touched, before)
                if tx is not None and self.journal is not None:
                    self.journal.finish(tx, "rolledback")
                raise
            if tx is not None and self.journal is not None:
                self.journal.finish(tx, "committed")
        finally:
            if locks is not None:
                locks.release()
        return result

    @staticmethod
    def _rollback(touched: list[str], before: Mapping[str, FileState]) -> None:
        for path in reversed(touched):
            state = before.get(path)
            if state is None:
                continue
            try:
                restore_state(path, state)
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


def op_summary(op: LabelOp) -> str:
    verb = "set" if op.action is Action.SET else "restore"
    return f"{op.driver} {verb} {op.path}" + (f" -> {op.value}" if op.value else "")
