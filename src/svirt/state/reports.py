"""The per-resource outcomes of a domain's last restore (issue 14).

QEMU's exit is seen by the domain's monitor, which restores the files; ``svirt stop``
only waits for it. The monitor's restore writes what happened to each resource here, in
the same commit that removes the domain's record, and ``stop`` reads it (and removes it)
once the record is gone, so it says what the restore did instead of guessing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from svirt.state.db import write_transaction

__all__ = ["OutcomeReports"]

_KEEP_SECONDS = 24 * 3600.0  # a report nobody asked for (the guest powered itself off)


class OutcomeReports:
    """Rows of ``outcome_reports``; writes join the caller's database transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def put(self, domain: str, body: list[dict[str, Any]]) -> None:
        now = time.time()
        self.conn.execute("DELETE FROM outcome_reports WHERE written < ?", (now - _KEEP_SECONDS,))
        self.conn.execute(
            "INSERT OR REPLACE INTO outcome_reports(domain, written, body) VALUES (?, ?, ?)",
            (domain, now, json.dumps(body)),
        )

    def take(self, domain: str) -> list[dict[str, Any]] | None:
        """The report of the domain's last restore, removed from the table; None when
        there is none."""
        row = self.conn.execute(
            "SELECT body FROM outcome_reports WHERE domain=?", (domain,)
        ).fetchone()
        if row is None:
            return None
        with write_transaction(self.conn):
            self.conn.execute("DELETE FROM outcome_reports WHERE domain=?", (domain,))
        try:
            body = json.loads(row[0])
        except ValueError:
            return None
        return body if isinstance(body, list) else None
