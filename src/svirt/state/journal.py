"""The intent journal: the state of every file a transaction will touch, recorded durably
before the first mutation (see :mod:`svirt.security.transaction`)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from svirt.host.files import FileState
from svirt.host.procs import pid_alive, start_time
from svirt.state.db import write_transaction

__all__ = ["Journal", "JournalEntry", "OpenTransaction"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    path: str
    before: FileState


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    id: int
    domain: str
    action: str
    pid: int
    started: float
    pid_start: int | None = None  # the process's start time (pid reuse is not it)

    def alive(self) -> bool:
        """The process that opened the transaction still runs."""
        return pid_alive(self.pid, self.pid_start)


def _self_start() -> int | None:
    return start_time(os.getpid())


class Journal:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def begin(self, domain: str, action: str, files: Sequence[tuple[str, FileState]]) -> int:
        """Record an open transaction and the prior state of its files, in one commit."""
        with write_transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO journal_tx(domain, action, pid, started, state, pid_start) "
                "VALUES (?, ?, ?, ?, 'open', ?)",
                (domain, action, os.getpid(), time.time(), _self_start()),
            )
            tx = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO journal_file(tx, seq, path, before) VALUES (?, ?, ?, ?)",
                [(tx, i, p, json.dumps(st.to_json())) for i, (p, st) in enumerate(files)],
            )
        return tx

    def finish(self, tx: int, state: str, also: Callable[[], None] | None = None) -> None:
        """Close a transaction; its file records are no longer needed. ``also`` runs in
        the same database transaction (e.g. the domain's new state), so the two commit
        together or not at all."""
        with write_transaction(self.conn):
            self.conn.execute("UPDATE journal_tx SET state=? WHERE id=?", (state, tx))
            self.conn.execute("DELETE FROM journal_file WHERE tx=?", (tx,))
            self.conn.execute("DELETE FROM journal_tx WHERE id=?", (tx,))
            if also is not None:
                also()

    def is_open(self, tx: int) -> bool:
        row = self.conn.execute("SELECT state FROM journal_tx WHERE id=?", (tx,)).fetchone()
        return row is not None and row[0] == "open"

    def open_transactions(self) -> Iterator[OpenTransaction]:
        for row in self.conn.execute(
            "SELECT id, domain, action, pid, started, pid_start FROM journal_tx "
            "WHERE state='open' ORDER BY id DESC"
        ).fetchall():
            yield OpenTransaction(
                int(row[0]),
                str(row[1]),
                str(row[2]),
                int(row[3]),
                float(row[4]),
                None if row[5] is None else int(row[5]),
            )

    def entries(self, tx: int) -> list[JournalEntry]:
        return [
            JournalEntry(int(seq), str(path), FileState.from_json(json.loads(before)))
            for seq, path, before in self.conn.execute(
                "SELECT seq, path, before FROM journal_file WHERE tx=? ORDER BY seq", (tx,)
            )
        ]
