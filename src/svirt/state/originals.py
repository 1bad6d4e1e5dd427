"""svirt's own copy of the originals it remembers (issue 12).

libvirt keeps the original label or owner of a file only in the file's
``trusted.libvirt.security.<driver>`` xattrs, and its failed start on a file another
domain uses (or its stop on a shared file) removes them: the original is then lost and
the last user's restore gives the file to root:root. svirt also keeps each original it
remembers here, per domain, driver and path (with the inode), written in the same commit
as the labelling and dropped in the commit of the restore, so that when the xattrs
vanish under a running svirt domain, ``stop`` puts the true original back and ``doctor``
says whose memory was erased.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from svirt.host import remembered as codec

__all__ = ["Kept", "KeptOriginals"]


@dataclass(frozen=True, slots=True)
class Kept:
    domain: str
    driver: str
    path: str
    dev: int
    ino: int
    value: str


class KeptOriginals:
    """Rows of ``kept_originals``; writes join the caller's database transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def keep(self, k: Kept) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO kept_originals(domain, driver, path, dev, ino, value) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (k.domain, k.driver, k.path, k.dev, k.ino, k.value),
        )

    def forget(self, domain: str, driver: str, path: str) -> None:
        self.conn.execute(
            "DELETE FROM kept_originals WHERE domain=? AND driver=? AND path=?",
            (domain, driver, path),
        )

    def forget_domain(self, domain: str) -> None:
        self.conn.execute("DELETE FROM kept_originals WHERE domain=?", (domain,))

    def get(self, domain: str, driver: str, path: str) -> Kept | None:
        row = self.conn.execute(
            "SELECT dev, ino, value FROM kept_originals WHERE domain=? AND driver=? AND path=?",
            (domain, driver, path),
        ).fetchone()
        if row is None:
            return None
        return Kept(domain, driver, path, int(row[0]), int(row[1]), str(row[2]))

    def all(self, domain: str | None = None) -> list[Kept]:
        query = "SELECT domain, driver, path, dev, ino, value FROM kept_originals"
        args: tuple[str, ...] = ()
        if domain is not None:
            query += " WHERE domain=?"
            args = (domain,)
        return [
            Kept(str(d), str(drv), str(p), int(dev), int(ino), str(v))
            for d, drv, p, dev, ino, v in self.conn.execute(query + " ORDER BY domain, path", args)
        ]

    def erased(self, domain: str | None = None) -> list[Kept]:
        """Kept originals whose file (the same inode) no longer carries the remembered
        xattr (read through the one codec): someone else removed it while the domain
        used the file."""
        out = []
        for k in self.all(domain):
            try:
                st = os.stat(k.path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != (k.dev, k.ino):
                continue
            try:
                present = codec.get_xattr(k.path, codec.xattr_names(k.driver)[0]) is not None
            except OSError:
                continue  # unreadable: nothing says it was erased
            if not present:
                out.append(k)
        return out
