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
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from svirt.errors import LabelSystemError, SecurityError, SvirtError
from svirt.host.files import FileState, restore_state, snapshot
from svirt.security import remember as rem
from svirt.security import report as rep
from svirt.security.driver import Action, LabelOp, Outcome, SecurityDriver
from svirt.state.db import write_transaction
from svirt.state.journal import Journal
from svirt.state.originals import Kept, KeptOriginals

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
        self.aliases: dict[str, str] = {}  # path -> the locked path naming the same file

    def __enter__(self) -> MetadataLocks:
        seen: dict[tuple[int, int], str] = {}
        try:
            for path in self.paths:
                fd = self._open(path, self.opener.get(path, path))
                if fd is None:
                    continue
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) in seen:
                    # The same file by another name: it is locked already (a second
                    # flock on a directory would wait for ourselves).
                    os.close(fd)
                    self.aliases[path] = seen[(st.st_dev, st.st_ino)]
                    continue
                self._lock(path, fd)
                self.fds[path] = fd
                seen[(st.st_dev, st.st_ino)] = path
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
            # libvirt never locks directories; svirt changes their ACLs (search for
            # QEMU) with a read-modify-write, so it serialises them with flock.
            try:
                return os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
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
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        for _ in range(_LOCK_RETRIES):
            try:
                if is_dir:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1, os.SEEK_SET)
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    break
                time.sleep(0.001)
        os.close(fd)
        raise SecurityError(f"unable to lock {path} for metadata change")

    def locked(self, path: str) -> bool:
        return path in self.fds or path in self.aliases

    def release(self) -> None:
        for path, fd in self.fds.items():
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                else:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1, os.SEEK_SET)
                os.close(fd)
            except OSError as exc:
                log.warning("unable to unlock %s: %s", path, exc.strerror)
        self.fds.clear()


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo() -> dict[str, tuple[str, str, str]]:
    """mount id -> (device ``maj:min``, root of the mount inside its filesystem, mount
    point), from ``/proc/self/mountinfo``."""
    out: dict[str, tuple[str, str, str]] = {}
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 4:
                    out[parts[0]] = (
                        parts[2],
                        _unescape_mountinfo(parts[3]),
                        _unescape_mountinfo(parts[4]),
                    )
    except OSError:
        pass
    return out


def _mount_id(fd: int) -> str | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as fh:
            return next((ln.split()[1] for ln in fh if ln.startswith("mnt_id:")), None)
    except OSError:
        return None


def _fs_path(real: str, mount: tuple[str, str, str]) -> str:
    """Where ``real`` lies inside its filesystem (what a bind mount hides)."""
    _dev, root, point = mount
    rel = real[len(point) :] if point != "/" else real
    return (root.rstrip("/") + "/" + rel.lstrip("/")).rstrip("/") or "/"


def _under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


class ProtectedTrees:
    """The protected paths, judged on the inode as well as on the name.

    Each configured entry counts under its own (normalised) name and under what it
    resolves to (an entry that is a symlink or holds ``..`` protects its target). A file
    is protected when its canonical path lies under one of them, when one of its
    ancestors *is* a protected directory by (device, inode) (a bind mount of ``/etc``
    elsewhere), or when, seen from inside its filesystem, it lies under a protected tree
    of the same filesystem (a bind mount of ``/etc/shadow`` or of a subtree of ``/etc``
    over a harmless-looking path)."""

    def __init__(self, paths: Sequence[str]) -> None:
        names: dict[str, None] = {}
        for p in paths:
            names[os.path.normpath(p)] = None
            names[os.path.realpath(p)] = None
        self.names = tuple(names)
        self.inodes: dict[tuple[int, int], str] = {}
        self.fs_trees: list[tuple[str, str, str]] = []  # (dev, path inside fs, name)
        self._mounts = _mountinfo()
        for name in self.names:
            try:
                fd = os.open(name, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                self.inodes[(st.st_dev, st.st_ino)] = name
                mount = self._mount_of(fd)
                if mount is not None:
                    real = os.readlink(f"/proc/self/fd/{fd}")
                    self.fs_trees.append((mount[0], _fs_path(real, mount), name))
            finally:
                os.close(fd)

    def _mount_of(self, fd: int) -> tuple[str, str, str] | None:
        mnt_id = _mount_id(fd)
        if mnt_id is None:
            return None
        if mnt_id not in self._mounts:
            self._mounts = _mountinfo()  # mounted since we looked
        return self._mounts.get(mnt_id)

    def why(self, fd: int, real: str) -> str | None:
        """Why the file open as ``fd`` (canonically ``real``) is protected, or None."""
        for prot in self.names:
            if _under(real, prot):
                return f"{real} is under the protected path {prot}"
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in self.inodes:
            return f"{real} is the protected path {self.inodes[(st.st_dev, st.st_ino)]}"
        parent = os.path.dirname(real)
        while True:
            try:
                pst = os.stat(parent)
            except OSError:
                pst = None
            if pst is not None and (pst.st_dev, pst.st_ino) in self.inodes:
                prot = self.inodes[(pst.st_dev, pst.st_ino)]
                return f"{real} is under {parent}, which is the protected path {prot}"
            if parent == "/":
                break
            parent = os.path.dirname(parent)
        mount = self._mount_of(fd) if self.fs_trees else None
        if mount is not None:
            inside = _fs_path(real, mount)
            for dev, tree, prot in self.fs_trees:
                if dev == mount[0] and _under(inside, tree) and tree != "/":
                    return f"{real} is mounted from {inside}, under the protected path {prot}"
        return None


class _Pins:
    """Each path resolved and opened once (``O_PATH``), so every check and change acts on
    the inode that was checked: a file swapped for a symlink mid-way cannot redirect a
    relabel or chown. A path that is a symlink when first seen is followed (as libvirt
    follows symlinked images); one that is not is opened with ``O_NOFOLLOW``, and a
    change of identity between the look and the open is refused. Whatever a path
    resolves to must not be protected (:class:`ProtectedTrees`); with ``single_link``,
    a regular file with more than one hard link is refused too (another of its names
    may be a protected file: the link count is the only trace a hard link leaves)."""

    def __init__(self, protected: Sequence[str], *, single_link: bool = False) -> None:
        self.protected = ProtectedTrees(protected) if protected else None
        self.single_link = single_link
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
        why = self.protected.why(fd, real) if self.protected is not None else None
        if why is None and self.single_link and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            why = (
                f"{real} has {st.st_nlink} hard links (another name may be a protected "
                "file; set allow_hard_links = true in svirt.conf to accept)"
            )
        if why is not None:
            os.close(fd)
            raise SecurityError(f"refusing to label {path}: {why}")
        self.fds[path] = fd
        self.targets[path] = f"/proc/self/fd/{fd}"
        self.real[path] = real

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _InterruptedBefore(Exception):
    def __init__(self, domain: str) -> None:
        super().__init__(domain)
        self.domain = domain


@dataclass
class TransactionResult:
    outcomes: list[tuple[LabelOp, Outcome]] = field(default_factory=list)
    errors: list[tuple[LabelOp, SvirtError]] = field(default_factory=list)
    # (path, driver, original) whose remembered xattrs had been erased by someone else
    # and were put back from svirt's own copy before the restore
    reinstated: list[tuple[str, str, str]] = field(default_factory=list)
    # issue 14: what happened to each resource, in order (failures included); the
    # manager prepends what the drivers' rules left alone
    report: list[rep.ResourceOutcome] = field(default_factory=list)


_REMEMBERED_DRIVERS = ("selinux", "dac")


def _current(drv: SecurityDriver, target: str) -> str | None:
    current = getattr(drv, "current", None)  # recover's own step has none
    if current is None:
        return None
    try:
        value = current(target)
    except (OSError, SvirtError):
        return None
    return value if isinstance(value, str) else None


def _remembered_value(target: str, driver: str) -> str | None:
    try:
        return os.getxattr(target, rem.xattr_names(driver)[0]).decode("utf-8", "replace")
    except OSError:
        return None


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
        recall_unlocked: bool = False,
        allow_hard_links: bool = False,
        kept: KeptOriginals | None = None,
    ) -> None:
        self.recall_unlocked = recall_unlocked
        # svirt's copies of remembered originals, read (never written) when there is no
        # journal to commit with: a restore on a full disk still puts erased ones back
        self.kept = kept
        self.drivers = drivers
        self.journal = journal
        self.remember = remember
        self.protected = tuple(protected)
        self.allow_hard_links = allow_hard_links
        self.step_hook = step_hook

    def _effective(self, op: LabelOp, locks: MetadataLocks | None) -> LabelOp:
        if self.recall_unlocked:
            return op
        if op.remember and not (locks is not None and locks.locked(op.path)):
            return LabelOp(op.driver, op.action, op.path, op.value, False, op.owner, op.readonly)
        return op

    def run(
        self,
        domain: str,
        ops: Sequence[LabelOp],
        *,
        best_effort: bool = False,
        on_commit: Callable[[TransactionResult], None] | None = None,
    ) -> TransactionResult:
        """Apply ``ops``. Without ``best_effort`` the first failure rolls everything back
        and is raised; with it, every operation is tried and failures are returned.
        ``on_commit`` runs inside the database transaction that closes the journal entry
        (state changes that must commit together with the file changes)."""
        for attempt in range(3):
            try:
                return self._attempt(domain, ops, best_effort, on_commit)
            except _InterruptedBefore as busy:
                if attempt == 2 or self.journal is None:
                    raise SecurityError(
                        f"files of an interrupted transaction of domain '{busy.domain}' "
                        "could not be put back; run 'svirt recover'"
                    ) from None
                # A process that died holding our files' locks left them half done:
                # put them back (under the locks) before building on them.
                recover(self.journal)
        raise AssertionError("unreachable")

    def _commit_only(
        self, result: TransactionResult, on_commit: Callable[[TransactionResult], None] | None
    ) -> TransactionResult:
        if on_commit is not None:
            if self.journal is not None:
                with write_transaction(self.journal.conn):
                    on_commit(result)
            else:
                on_commit(result)
        return result

    def _attempt(
        self,
        domain: str,
        ops: Sequence[LabelOp],
        best_effort: bool,
        on_commit: Callable[[TransactionResult], None] | None,
    ) -> TransactionResult:
        result = TransactionResult()
        if not ops:
            return self._commit_only(result, on_commit)
        # A restore only puts files back as they were: the link count is checked when
        # a file is first labelled, not when it is given back.
        pins = _Pins(self.protected, single_link=not (best_effort or self.allow_hard_links))
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
                    result.report.append(rep.failed(op, str(exc)))
            ops = [op for op in ops if op.path not in unusable]
            if not ops:
                return self._commit_only(result, on_commit)
            locks = None
            if self.remember:
                # Every file this transaction may change is locked, not only the ones
                # it remembers: a rollback must never write over another process's work.
                locks = MetadataLocks(list(pins.targets), pins.targets)
                locks.__enter__()
            try:
                self._check_interrupted(pins)
                self._run(domain, ops, pins, locks, result, best_effort, on_commit)
            finally:
                if locks is not None:
                    locks.release()
        finally:
            pins.close()
        return result

    def _check_interrupted(self, pins: _Pins) -> None:
        """Refuse to build on files a dead process's transaction left half done."""
        if self.journal is None:
            return
        ours = set()
        for fd in pins.fds.values():
            st = os.fstat(fd)
            ours.add((st.st_dev, st.st_ino))
        for tx in self.journal.open_transactions():
            if tx.alive() and tx.pid != os.getpid():
                continue
            for entry in self.journal.entries(tx.id):
                if (entry.before.dev, entry.before.ino) in ours:
                    raise _InterruptedBefore(tx.domain)

    def _run(
        self,
        domain: str,
        ops: Sequence[LabelOp],
        pins: _Pins,
        locks: MetadataLocks | None,
        result: TransactionResult,
        best_effort: bool,
        on_commit: Callable[[TransactionResult], None] | None,
    ) -> None:
        before = {path: snapshot(target) for path, target in pins.targets.items()}
        tx = None
        if self.journal is not None:
            files = [(pins.real[p], st) for p, st in before.items()]
            tx = self.journal.begin(domain, ops[0].action.value, files)
        touched: list[str] = []
        kept = KeptOriginals(self.journal.conn) if self.journal is not None else self.kept
        try:
            for i, raw_op in enumerate(ops):
                op = self._effective(raw_op, locks)
                if op.path not in touched:
                    touched.append(op.path)
                target = pins.targets[op.path]
                reinstated = None
                if kept is not None and op.action is Action.RESTORE and op.remember:
                    n = len(result.reinstated)
                    self._reinstate(kept, domain, op, target, result)
                    if len(result.reinstated) > n:
                        reinstated = result.reinstated[-1][2]
                drv = self.drivers[op.driver]
                before_value = _current(drv, target)
                try:
                    outcome = drv.apply(op, target)
                except SvirtError as exc:
                    if not best_effort:
                        raise
                    log.warning("%s", exc)
                    result.errors.append((op, exc))
                    result.report.append(rep.failed(op, str(exc)))
                    continue
                result.outcomes.append((op, outcome))
                result.report.append(
                    self._describe(raw_op, op, outcome, target, before_value, reinstated)
                )
                if self.step_hook is not None:
                    self.step_hook(i)
        except BaseException:
            self._rollback(touched, before, pins.targets)
            if tx is not None and self.journal is not None:
                self.journal.finish(tx, "rolledback")
            raise

        def also() -> None:
            if kept is not None and self.journal is not None:
                self._keep(kept, domain, result, pins.targets)
            if on_commit is not None:
                on_commit(result)

        try:
            if tx is not None and self.journal is not None:
                self.journal.finish(tx, "committed", also)
            else:
                also()
        except BaseException:
            # on_commit refused (its database transaction rolled back with the journal's
            # close): put the files back too, while the locks are still held.
            self._rollback(touched, before, pins.targets)
            if tx is not None and self.journal is not None:
                self.journal.finish(tx, "rolledback")
            raise

    def _describe(
        self,
        raw_op: LabelOp,
        op: LabelOp,
        outcome: Outcome,
        target: str,
        before: str | None,
        reinstated: str | None,
    ) -> rep.ResourceOutcome:
        """The record of one applied operation: what the driver did and, where nothing
        was remembered, why (this transaction knows: the plan, remember_owner, locks)."""
        remembered = (
            op.remember
            and op.action is Action.SET
            and outcome is Outcome.DONE
            and _remembered_value(target, op.driver) is not None
        )
        if not raw_op.remember:
            why = rep.NOT_REMEMBERED_KIND
        elif not self.remember and not self.recall_unlocked:
            why = rep.NOT_REMEMBERED_CONFIG
        elif not op.remember:
            why = rep.NOT_REMEMBERED_LOCK
        elif op.action is Action.SET:
            why = "the filesystem keeps no xattrs"
        else:
            why = rep.NOT_REMEMBERED_FILE
        is_dir = outcome in (Outcome.GRANTED, Outcome.USABLE) and os.path.isdir(target)
        acl = None
        if outcome in (Outcome.GRANTED, Outcome.REVOKED) and op.value:
            uid = op.value.split(":")[0].lstrip("+")
            perm = "--x" if is_dir else ("r--" if op.readonly else "rw-")
            acl = f"u:{uid}:{perm}" if outcome is Outcome.GRANTED else f"u:{uid}"
        return rep.describe(
            op,
            outcome,
            before=before,
            after=_current(self.drivers[op.driver], target),
            remembered=remembered,
            not_remembered_why=why,
            reinstated=reinstated,
            is_dir=is_dir,
            acl=acl,
        )

    @staticmethod
    def _keep(
        kept: KeptOriginals, domain: str, result: TransactionResult, targets: Mapping[str, str]
    ) -> None:
        """svirt's own copy of each original this transaction remembered (SET), dropped
        once recalled (RESTORE); runs in the commit that closes the journal entry."""
        for op, outcome in result.outcomes:
            if not op.remember or op.driver not in _REMEMBERED_DRIVERS:
                continue
            if op.action is Action.RESTORE:
                kept.forget(domain, op.driver, op.path)
                continue
            if outcome is not Outcome.DONE:
                continue
            target = targets[op.path]
            value = _remembered_value(target, op.driver)
            if value is None:
                continue
            st = os.stat(target)
            kept.keep(Kept(domain, op.driver, op.path, st.st_dev, st.st_ino, value))

    @staticmethod
    def _reinstate(
        kept: KeptOriginals, domain: str, op: LabelOp, target: str, result: TransactionResult
    ) -> None:
        """Before a restore that recalls: when the remembered xattrs are gone but svirt
        kept the original for this domain and inode, put them back (one user: this
        domain) so the driver's own restore recalls the true original."""
        if op.driver not in _REMEMBERED_DRIVERS or _remembered_value(target, op.driver):
            return
        k = kept.get(domain, op.driver, op.path)
        if k is None:
            return
        st = os.stat(target)
        if (st.st_dev, st.st_ino) != (k.dev, k.ino):
            return
        rem.reinstate(target, op.driver, k.value, name=op.path)
        log.warning("%s", rem.erased_warning(op.path, op.driver, domain, k.value))
        result.reinstated.append((op.path, op.driver, k.value))

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


def recover(journal: Journal, *, apply: bool = True) -> list[RecoveryAction]:
    """Roll back every transaction left open by a process that no longer exists, under
    the metadata locks of its files and through the inode each path names now. A file
    that cannot be written back is reported (``failed``) and its transaction stays open
    for ``svirt recover``; nothing is raised."""
    actions: list[RecoveryAction] = []
    for tx in journal.open_transactions():
        if tx.pid != os.getpid() and tx.alive():
            continue
        entries = journal.entries(tx.id)
        pins = _Pins(())
        for entry in entries:
            try:
                pins.pin(entry.path)
            except SecurityError:
                actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "missing"))
        locks = MetadataLocks(list(pins.targets), pins.targets) if apply else None
        failed = False
        try:
            if locks is not None:
                locks.__enter__()
                # Another process may have recovered it while we waited for the locks,
                # and a newer transaction may already have built on the files since.
                if not journal.is_open(tx.id):
                    continue
            for entry in reversed(entries):
                target = pins.targets.get(entry.path)
                if target is None:
                    continue
                now = snapshot(target)
                if (now.dev, now.ino) != (entry.before.dev, entry.before.ino):
                    # Never write through a path that now names another file.
                    actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "replaced"))
                    continue
                if now == entry.before:
                    actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "unchanged"))
                    continue
                if apply:
                    try:
                        restore_state(target, entry.before)
                    except OSError as exc:
                        log.warning("cannot put back %s: %s", entry.path, exc.strerror)
                        actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "failed"))
                        failed = True
                        continue
                actions.append(RecoveryAction(tx.id, tx.domain, entry.path, "restore"))
            if apply and not failed:
                journal.finish(tx.id, "rolledback")  # before the locks go
        finally:
            if locks is not None:
                locks.release()
            pins.close()
    return actions
