"""Domain records: one live XML file per domain svirt has labelled or started.

``<state_dir>/domains/<name>.xml`` holds libvirt's status form, as libvirt keeps
``/run/libvirt/qemu/<name>.xml``, so every tool that reads one reads the other::

    <domstatus state='running' pid='1234' svirt-owner='5678'>
      <domain type='kvm' id='1'> … generated <seclabel>s … </domain>
    </domstatus>

``state`` is ``labelling`` (a ``svirt label`` in progress), ``labelled``, ``starting``
(the monitor is labelling), ``launching`` (labelled, QEMU not yet up), ``running``,
``stopping`` or ``restore-failed``; ``svirt-owner`` is the pid of the svirt process (or
monitor) responsible for the record, so a record whose owner died can be reconciled.

With a database connection the store's authority is the ``domains`` table: inserting a
row claims the name (two processes cannot label one domain at once), and its state
changes in the same database transaction as the journal entry of the work that
justifies it. The XML files are the view every reader (verify, audit, doctor, libvirt
tooling) uses; without a connection the store reads the files alone.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import sqlite3
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import defusedxml.ElementTree as DET

from svirt.domain.format import format_domain
from svirt.domain.model import Domain
from svirt.domain.parse import parse_domain
from svirt.errors import PREFIX_OPERATION_INVALID, StateError, SvirtError
from svirt.host.procs import pid_alive, start_time
from svirt.state.db import fsync_dir, write_transaction

__all__ = [
    "ACTIVE",
    "TRANSITIONS",
    "DomainRecord",
    "DomainState",
    "DomainStore",
    "may_move",
    "may_run",
]

_NAME = re.compile(r"^[^/\0]{1,200}$")


class DomainState(enum.StrEnum):
    """The state of a domain's record (the values are those of the status XML)."""

    LABELLING = "labelling"  # a `svirt label` is labelling its files
    LABELLED = "labelled"  # labelled without a QEMU (`svirt label`)
    STARTING = "starting"  # the monitor claimed it and is labelling
    LAUNCHING = "launching"  # labelled, QEMU not up yet
    RUNNING = "running"
    STOPPING = "stopping"  # QEMU is gone or going: whoever took it restores
    RESTORING = "restoring"  # a `svirt restore` of a labelled domain
    RESTORE_FAILED = "restore-failed"  # some files are still to restore (``pending``)

    @property
    def active(self) -> bool:
        """A QEMU belongs (or is about to belong) to the domain."""
        return self in ACTIVE


ACTIVE: frozenset[DomainState] = frozenset(
    {DomainState.STARTING, DomainState.LAUNCHING, DomainState.RUNNING, DomainState.STOPPING}
)

# Every state change a record may make (None: no record). Restoring and stopping end by
# removing the record; recovery forgets a claim whose process died while labelling and
# puts a dead `restoring` back to what its rollback restored.
TRANSITIONS: dict[DomainState | None, frozenset[DomainState | None]] = {
    None: frozenset({DomainState.LABELLING, DomainState.STARTING}),
    DomainState.LABELLING: frozenset({DomainState.LABELLED, None}),
    DomainState.LABELLED: frozenset({DomainState.RESTORING}),
    DomainState.STARTING: frozenset({DomainState.LAUNCHING, DomainState.STOPPING, None}),
    # launching -> launching records the QEMU's pid (and start time) before it may exec
    DomainState.LAUNCHING: frozenset(
        {
            DomainState.LAUNCHING,
            DomainState.RUNNING,
            DomainState.STOPPING,
            DomainState.RESTORE_FAILED,
            None,
        }
    ),
    DomainState.RUNNING: frozenset({DomainState.STOPPING}),
    DomainState.STOPPING: frozenset({DomainState.STOPPING, DomainState.RESTORE_FAILED, None}),
    DomainState.RESTORING: frozenset({DomainState.LABELLED, DomainState.RESTORE_FAILED, None}),
    DomainState.RESTORE_FAILED: frozenset(
        {DomainState.RESTORING, DomainState.RESTORE_FAILED, None}
    ),
}


def may_move(old: DomainState | str | None, new: DomainState | str | None) -> bool:
    """Whether the table allows a record in ``old`` to go to ``new``."""
    try:
        o = None if old is None else DomainState(old)
        n = None if new is None else DomainState(new)
    except ValueError:
        return False
    return n in TRANSITIONS[o]


def may_run(state: DomainState | str) -> bool:
    """Whether a QEMU may belong to a record in ``state`` (its pid means something)."""
    try:
        return DomainState(state).active
    except ValueError:
        return False


def _refuse(name: str, old: str | None, new: str | None) -> StateError:
    return StateError(
        f"internal error: domain '{name}' cannot go from {old or 'no record'} to "
        f"{new or 'no record'}"
    )


@dataclass(frozen=True, slots=True)
class DomainRecord:
    domain: Domain
    state: DomainState
    pid: int | None  # QEMU's pid when running
    owner: int | None  # svirt process or monitor responsible for the record
    path: Path
    pending: tuple[str, ...] = ()  # restore-failed: the paths still to restore
    private_dev: bool = False  # QEMU got a private /dev (decided at start, kept per VM)
    # issue 11: start times (/proc/PID/stat) of pid and owner: a reused pid is not them
    pid_start: int | None = None
    owner_start: int | None = None

    def owner_alive(self) -> bool:
        return pid_alive(self.owner, self.owner_start)


class DomainStore:
    def __init__(self, state_dir: Path, conn: sqlite3.Connection | None = None) -> None:
        self.dir = state_dir / "domains"
        self.conn = conn

    # --- the authoritative rows (with a connection) -------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise StateError("internal error: the domain store has no database")
        return self.conn

    def claim(
        self, name: str, state: DomainState, owner: int, *, private_dev: bool = False
    ) -> None:
        """Claim a domain name, atomically; raises when it is labelled or active."""
        self.path(name)
        if not may_move(None, state):
            raise _refuse(name, None, state)
        conn = self._db()
        with write_transaction(conn):
            row = conn.execute("SELECT state FROM domains WHERE name=?", (name,)).fetchone()
            if row is not None:
                raise StateError(
                    PREFIX_OPERATION_INVALID + f"domain '{name}' is already {row[0]}; "
                    "run 'svirt restore' or 'svirt stop' first"
                )
            conn.execute(
                "INSERT INTO domains(name, state, owner, private_dev, owner_start) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, state, owner, int(private_dev), start_time(owner)),
            )

    def set_state(
        self,
        name: str,
        state: DomainState,
        *,
        pid: int | None = None,
        owner: int | None = None,
        pending: Sequence[str] = (),
    ) -> None:
        """Change a row (joins the caller's database transaction when there is one);
        a change the transition table does not allow raises."""
        with write_transaction(self._db()) as conn:
            row = conn.execute("SELECT state FROM domains WHERE name=?", (name,)).fetchone()
            old = None if row is None else str(row[0])
            if old is not None and not may_move(old, state):
                raise _refuse(name, old, state)
            conn.execute(
                "UPDATE domains SET state=?, pid=COALESCE(?, pid), owner=COALESCE(?, owner), "
                "pending=?, pid_start=COALESCE(?, pid_start), "
                "owner_start=COALESCE(?, owner_start) WHERE name=?",
                (
                    state,
                    pid,
                    owner,
                    "\n".join(pending),
                    start_time(pid),
                    start_time(owner),
                    name,
                ),
            )

    def set_domain(self, domain: Domain, body: str | None = None) -> None:
        """Record the domain's live XML in its row (hotplug changes its disks)."""
        body = format_domain(domain, live=True) if body is None else body
        with write_transaction(self._db()) as conn:
            conn.execute("UPDATE domains SET xml=? WHERE name=?", (body, domain.name))

    def set_domain_while(self, domain: Domain, state: DomainState) -> None:
        """Record the domain's XML only while its row is in ``state`` (a hotplug's
        commit: once the monitor is stopping the VM, it alone decides what to restore)."""
        with write_transaction(self._db()) as conn:
            cur = conn.execute(
                "UPDATE domains SET xml=? WHERE name=? AND state=?",
                (format_domain(domain, live=True), domain.name, state),
            )
            if cur.rowcount != 1:
                raise StateError(
                    PREFIX_OPERATION_INVALID + f"domain '{domain.name}' is no longer {state}"
                )

    def take(self, name: str, states: Sequence[str], seen_owner: int, state: DomainState) -> bool:
        """Become the row's owner, moving it to ``state``, if it is still in one of
        ``states`` with the owner seen: of two processes racing to restore a domain, one
        wins and the other does nothing. Only states the table lets move to ``state``
        are taken."""
        states = [s for s in states if may_move(s, state)]
        if not states:
            return False
        with write_transaction(self._db()) as conn:
            marks = ",".join("?" * len(states))
            cur = conn.execute(
                f"UPDATE domains SET state=?, owner=?, owner_start=? WHERE name=? AND owner=? "
                f"AND state IN ({marks})",
                (state, os.getpid(), start_time(os.getpid()), name, seen_owner, *states),
            )
            return cur.rowcount == 1

    def drop(self, name: str, *, owner: int | None = None) -> None:
        """Delete the row; with ``owner``, only while that process still owns it."""
        with write_transaction(self._db()) as conn:
            if owner is None:
                cur = conn.execute("DELETE FROM domains WHERE name=?", (name,))
            else:
                cur = conn.execute("DELETE FROM domains WHERE name=? AND owner=?", (name, owner))
            if cur.rowcount:
                conn.execute("DELETE FROM kept_originals WHERE domain=?", (name,))

    def rows(self) -> list[tuple[str, str, int | None, int, tuple[str, ...]]]:
        """(name, state, pid, owner, pending) of every claimed domain."""
        return [
            (
                str(n),
                str(st),
                None if pid is None else int(pid),
                int(owner),
                tuple(p for p in str(pending).split("\n") if p),
            )
            for n, st, pid, owner, pending in self._db().execute(
                "SELECT name, state, pid, owner, pending FROM domains ORDER BY name"
            )
        ]

    def owner_start(self, name: str) -> int | None:
        """The start time of the row's owner when it was recorded (issue 11)."""
        row = self._db().execute("SELECT owner_start FROM domains WHERE name=?", (name,))
        found = row.fetchone()
        return None if found is None or found[0] is None else int(found[0])

    # --- the XML view -------------------------------------------------------------------

    def path(self, name: str) -> Path:
        if not _NAME.match(name) or name in (".", ".."):
            raise StateError(f"invalid domain name '{name}'")
        return self.dir / f"{name}.xml"

    @staticmethod
    def _text(
        domain_xml: str,
        state: str,
        pid: int | None,
        owner: int,
        pending: Sequence[str],
        pid_start: int | None = None,
    ) -> str:
        attrs = f" state='{state}'"
        # Only a record whose QEMU may run names it (a restore-failed record's QEMU is
        # gone: its pid may be another process's by now), with its start time, so that
        # readers of the view (verify, audit explain) tell a reused pid apart.
        if pid is not None and may_run(state):
            attrs += f" pid='{pid}'"
            if pid_start is not None:
                attrs += f" svirt-pid-start='{pid_start}'"
        attrs += f" svirt-owner='{owner}'"
        text = f"<domstatus{attrs}>\n"
        if pending:
            text += "  <restore-pending>\n"
            text += "".join(f"    <path>{escape(p)}</path>\n" for p in pending)
            text += "  </restore-pending>\n"
        text += "".join(f"  {ln}\n" for ln in domain_xml.splitlines())
        return text + "</domstatus>\n"

    def _write_view(self, name: str, text: str) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(name)
        tmp = self.dir / f".tmp.{os.getpid()}.{time.monotonic_ns()}"
        try:
            # 0600: every domain's XML is root's alone (issue 11).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            fsync_dir(self.dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(
                f"cannot write domain record: {exc.strerror}", source=str(target)
            ) from None
        return target

    def write(
        self,
        domain: Domain,
        state: DomainState,
        *,
        pid: int | None = None,
        owner: int | None = None,
        pending: Sequence[str] = (),
    ) -> Path:
        """Record the domain (its row's XML, with a database) and write its view
        atomically (temporary file, fsync, rename)."""
        body = format_domain(domain, live=True)
        if self.conn is not None:
            self.set_domain(domain, body)
        owner = owner if owner is not None else os.getpid()
        text = self._text(body, state, pid, owner, pending, start_time(pid))
        return self._write_view(domain.name, text)

    def sync_view(self, name: str) -> None:
        """Write one domain's view from its row."""
        self.sync_views(only=name)

    def sync_views(self, only: str | None = None) -> None:
        """Make every view say what its row says (after a crash between the two), and
        remove views of names no row claims."""
        conn = self._db()
        claimed = set()
        query = "SELECT name, state, pid, owner, pending, xml, pid_start FROM domains"
        args: tuple[str, ...] = ()
        if only is not None:
            query += " WHERE name=?"
            args = (only,)
        for name, state, pid, owner, pending, xml, pid_start in conn.execute(
            query, args
        ).fetchall():
            claimed.add(name)
            if not xml:
                continue  # claimed, not described yet
            text = self._text(
                str(xml),
                str(state),
                pid,
                int(owner),
                tuple(p for p in str(pending).split("\n") if p),
                pid_start,
            )
            p = self.path(str(name))
            try:
                current = p.read_text()
            except OSError:
                current = None
            if current != text:
                self._write_view(str(name), text)
        if only is None and self.dir.is_dir():
            for view in self.dir.glob("*.xml"):
                if view.stem not in claimed:
                    view.unlink(missing_ok=True)

    def read(self, name: str) -> DomainRecord | None:
        p = self.path(name)
        if self.conn is not None:
            row = self.conn.execute(
                "SELECT state, pid, owner, pending, xml, private_dev, pid_start, owner_start "
                "FROM domains WHERE name=?",
                (name,),
            ).fetchone()
            if row is None or not row[4]:
                return None  # unclaimed, or claimed but not described yet
            try:
                domain = parse_domain(str(row[4]), inactive=False, source=str(p))
            except SvirtError as exc:
                raise StateError(f"unreadable domain record: {exc}", source=str(p)) from None
            pending = tuple(x for x in str(row[3]).split("\n") if x)
            return DomainRecord(
                domain,
                DomainState(str(row[0])),
                row[1],
                int(row[2]),
                p,
                pending,
                bool(row[5]),
                None if row[6] is None else int(row[6]),
                None if row[7] is None else int(row[7]),
            )
        if not p.exists():
            return None
        return self._read(p)

    def _read(self, p: Path) -> DomainRecord:
        try:
            data = p.read_bytes()
            root: ET.Element = DET.fromstring(data, forbid_dtd=True)
            domain = parse_domain(data, inactive=False, source=str(p))
        except (OSError, ET.ParseError, SvirtError) as exc:
            raise StateError(f"unreadable domain record: {exc}", source=str(p)) from None
        pid = root.get("pid")
        owner = root.get("svirt-owner")
        return DomainRecord(
            domain,
            _state(root.get("state"), p),
            int(pid) if pid and pid.isdigit() else None,
            int(owner) if owner and owner.isdigit() else None,
            p,
            tuple(e.text or "" for e in root.findall("restore-pending/path")),
        )

    def remove(self, name: str) -> None:
        """Forget a domain: its row (with a connection) and its XML view."""
        if self.conn is not None:
            self.drop(name)
        self.remove_view(name)

    def remove_view(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def records(self) -> Iterator[DomainRecord]:
        if self.conn is not None:
            for name, *_ in self.rows():
                rec = self.read(name)
                if rec is not None:
                    yield rec
            return
        if not self.dir.is_dir():
            return
        for p in sorted(self.dir.glob("*.xml")):
            try:
                yield self._read(p)
            except StateError:
                if p.exists():
                    raise  # removed meanwhile by another svirt process: not an error

    def next_id(self) -> int:
        ids = [r.domain.id for r in self.records() if r.domain.id is not None]
        return max(ids, default=0) + 1


def _state(text: str | None, path: Path) -> DomainState:
    try:
        return DomainState(text or "running")
    except ValueError:
        raise StateError(f"unknown domain state '{text}'", source=str(path)) from None
