"""The runtime state database (sqlite3) under the state directory.

One file, ``<state_dir>/svirt.db``, shared by every svirt process on the host. Writers
take sqlite's write lock with ``BEGIN IMMEDIATE`` so two processes allocating or
journalling at once serialise instead of failing.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import time
import urllib.parse
import weakref
from collections.abc import Iterator
from pathlib import Path

from svirt.errors import StateError

__all__ = ["connect", "connections_open", "fsync_dir", "write_transaction"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mcs_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The free pool of category pairs: a sparse Fisher–Yates permutation of pair indices.
-- Positions [0, free) hold free pairs. Only entries that differ from the identity are
-- stored, in both directions, so every operation is O(1).
CREATE TABLE IF NOT EXISTS mcs_perm (pos INTEGER PRIMARY KEY, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mcs_where (idx INTEGER PRIMARY KEY, pos INTEGER NOT NULL);
-- Every MCS level in use on this host: dynamic pairs, static labels, and pairs blocked
-- because a static label's categories dominate them.
-- A level has one row, except a static label several domains share (issue 14): one row
-- per domain, the pool's pair on one of them.
CREATE TABLE IF NOT EXISTS mcs_reservations (
    level TEXT NOT NULL,
    domain TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('dynamic', 'static', 'blocked')),
    pair INTEGER,
    created REAL NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,  -- the process that made it (orphans are reclaimed)
    PRIMARY KEY (level, domain)
);
CREATE INDEX IF NOT EXISTS mcs_reservations_domain ON mcs_reservations(domain);
-- The authoritative state of each domain svirt labelled or started (the XML record
-- under domains/ is the readable view). Inserting the row claims the name, and it changes
-- in the same database transaction as the journal entry of the labelling or restore
-- that justifies the change, so a crash can never leave the two disagreeing.
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    pid INTEGER,
    owner INTEGER NOT NULL,
    pending TEXT NOT NULL DEFAULT '',
    xml TEXT NOT NULL DEFAULT '',  -- the live domain XML (disks change with hotplug)
    private_dev INTEGER NOT NULL DEFAULT 0  -- started with a private /dev (fixed per VM)
);
-- Intent journal: before a transaction mutates anything, the security state of every
-- file it will touch is recorded, so a crash at any point can be rolled back.
CREATE TABLE IF NOT EXISTS journal_tx (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL,
    action TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'committed', 'rolledback'))
);
CREATE TABLE IF NOT EXISTS journal_file (
    tx INTEGER NOT NULL REFERENCES journal_tx(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    before TEXT NOT NULL,
    PRIMARY KEY (tx, seq)
);
-- svirt's own copy of every original it remembers in trusted.libvirt.security.<driver>
-- (issue 12): libvirt erases those xattrs when one of its domains fails to start on, or
-- stops using, a file another domain uses: the copy lets svirt notice and put the true
-- original back. Written and removed in the commits of the labelling and the restore.
CREATE TABLE IF NOT EXISTS kept_originals (
    domain TEXT NOT NULL,
    driver TEXT NOT NULL,
    path TEXT NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (domain, driver, path)
);
-- issue 14 (honest commands): the per-resource outcomes of a domain's last restore,
-- written in the commit that drops its record, read (and removed) by `svirt stop`
CREATE TABLE IF NOT EXISTS outcome_reports (
    domain TEXT PRIMARY KEY,
    written REAL NOT NULL,
    body TEXT NOT NULL
);
"""


def _private_dir(state_dir: Path) -> None:
    """The state directory is root's alone: 0700, and the database and its WAL files
    0600. Every domain's XML is in there; no other local user may read it. Files are
    changed by path only: opening and closing the database file here would drop the
    POSIX locks this process's other sqlite connections hold on it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if state_dir.stat().st_mode & 0o077:
        os.chmod(state_dir, 0o700)
    for suffix in ("", "-wal", "-shm"):
        path = state_dir / f"svirt.db{suffix}"
        try:
            if path.lstat().st_mode & 0o077:
                os.chmod(path, 0o600)
        except FileNotFoundError:
            pass


class _Connection(sqlite3.Connection):
    """A state-database connection (a subclass only so a weak reference can follow it)."""


# Every connection connect() opened in this process and not yet freed.
_opened: weakref.WeakSet[_Connection] = weakref.WeakSet()


def connections_open() -> bool:
    """Whether this process holds an open state-database connection. sqlite keeps the
    locks it holds on a database in per-process memory, which fork() copies, while the
    POSIX locks themselves are not inherited: a forked child that opens the same
    database then believes it holds locks it does not, and another process can delete
    the WAL under it, losing every write it commits (docs/design.md, "a monitor forked
    with open connections"). Garbage connections are collected first."""
    if not _opened:
        return False
    gc.collect()
    for conn in list(_opened):
        try:
            conn.total_changes  # noqa: B018 - raises once the connection is closed
        except sqlite3.ProgrammingError:
            continue
        return True
    return False


def connect(state_dir: Path) -> sqlite3.Connection:
    """Open (creating if needed) the state database. Autocommit mode: callers group
    writes with :func:`write_transaction`."""
    try:
        _private_dir(state_dir)
        conn = sqlite3.connect(
            state_dir / "svirt.db",
            timeout=30.0,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        _opened.add(conn)
        # Switching to WAL can report "locked" at once, without the busy handler, while
        # another process opens the same new database: retry it like a busy lock.
        deadline = time.monotonic() + 30.0
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        _private_dir(state_dir)  # the files sqlite just created
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        with write_transaction(conn):
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            _migrate(conn)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open state database in {state_dir}: {exc}") from None
    return conn


# Columns added after a table was first created: (table, column, declaration).
_ADDED_COLUMNS = (
    ("domains", "xml", "TEXT NOT NULL DEFAULT ''"),
    ("domains", "private_dev", "INTEGER NOT NULL DEFAULT 0"),
    ("mcs_reservations", "pid", "INTEGER NOT NULL DEFAULT 0"),
    # issue 11: processes are identified by pid and start time (/proc/PID/stat)
    ("domains", "pid_start", "INTEGER"),
    ("domains", "owner_start", "INTEGER"),
    ("journal_tx", "pid_start", "INTEGER"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a state database made by an earlier svirt up to this schema."""
    for table, column, decl in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    _rekey_mcs_reservations(conn)


# static: shared static labels (issue 14) ------------------------------------------------
def _rekey_mcs_reservations(conn: sqlite3.Connection) -> None:
    """Before issue 14 a level was the key of ``mcs_reservations`` (one domain per
    level); a static label shared by several domains needs (level, domain). sqlite
    cannot change a key in place: copy the rows into a table of the new shape."""
    keys = [row[1] for row in conn.execute("PRAGMA table_info(mcs_reservations)") if row[5]]
    if keys != ["level"]:
        return
    conn.execute("ALTER TABLE mcs_reservations RENAME TO mcs_reservations_old")
    conn.execute("DROP INDEX IF EXISTS mcs_reservations_domain")
    conn.execute("DROP INDEX IF EXISTS mcs_reservations_static")
    start = _SCHEMA.index("CREATE TABLE IF NOT EXISTS mcs_reservations")
    for stmt in _SCHEMA[start:].split(";")[:2]:  # the table and its domain index
        conn.execute(stmt)
    conn.execute(
        "INSERT INTO mcs_reservations(level, domain, kind, pair, created, pid) "
        "SELECT level, domain, kind, pair, created, pid FROM mcs_reservations_old"
    )
    conn.execute("DROP TABLE mcs_reservations_old")


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""
    if conn.in_transaction:
        # Nested use joins the outer transaction.
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def fsync_dir(path: Path) -> None:
    """Make a directory entry durable (after creating files in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def readonly_uri(db: Path) -> str:
    """The sqlite URI that opens ``db`` read-only (``uri=True``): the path percent-quoted,
    so a state directory with ``?``, ``#`` or ``%`` in its name is not misread."""
    return f"file:{urllib.parse.quote(str(db))}?mode=ro"
