"""Per-VM QEMU identities: a uid:gid of its own for each VM's QEMU (issue 11).

libvirt runs every VM as one ``qemu`` user, so where SELinux does not enforce, one VM's
QEMU can open another's disk and read its memory (``/proc/PID/mem``): nothing but MCS
separates them. With ``vm_identity`` on (the default, ``auto``, turns it on wherever the
host does not enforce SELinux), each VM's QEMU runs as ``N:N`` for an ``N`` drawn from
``vm_id_range``, and the DAC driver gives that identity the VM's files (by ACL entry:
chown cannot give one shared or read-only medium to two identities), so the kernel's
plain DAC checks separate VMs too: another uid has no entry on the disk, and ptrace
access (which ``/proc/PID/mem`` needs) is refused between different uids.

Reservations are kept like MCS pairs: persistent, in the state database (table
``vm_identities``), one per domain name, held by the process that made it (pid and start
time, so a dead holder's reservation is reclaimed and a reused pid is not taken for it),
released when the domain's labels are restored. The lowest free id is handed out; ids
that name a user or group in the host's databases, or that a live process runs as (a VM
of another state directory), are skipped.

The MCS ledger is being split into backends (sqlite, etcd); this ledger is meant to sit
behind the same interface, as its own table/keyspace (docs/design.md).
"""

from __future__ import annotations

import grp
import os
import pwd
import sqlite3
import time
from dataclasses import dataclass

from svirt.conf import Config
from svirt.errors import PREFIX_INTERNAL, SecurityError
from svirt.host import selinux as host_selinux
from svirt.host.procs import pid_alive, start_time
from svirt.state.db import write_transaction

__all__ = ["IdentityLedger", "VmIdentity", "vm_identity_enabled"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vm_identities (
    id INTEGER PRIMARY KEY,          -- the uid and gid QEMU runs as
    domain TEXT NOT NULL UNIQUE,
    pid INTEGER NOT NULL,            -- the process that reserved it
    pid_start INTEGER,               -- and its start time (/proc/PID/stat)
    created REAL NOT NULL
)
"""


def vm_identity_enabled(cfg: Config) -> bool:
    """Whether each VM's QEMU gets its own uid:gid: ``on``/``off``, or ``auto`` (on
    wherever SELinux does not enforce: there, DAC is the only separation)."""
    if cfg.vm_identity == "on":
        return True
    if cfg.vm_identity == "off":
        return False
    return not host_selinux.getenforce()


@dataclass(frozen=True, slots=True)
class VmIdentity:
    domain: str
    id: int
    pid: int
    pid_start: int | None

    def holder_alive(self) -> bool:
        return pid_alive(self.pid, self.pid_start)


def _named(n: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(n)
            return True
        except KeyError:
            pass
    return False


def _running_uids(first: int, last: int) -> set[int]:
    """Uids in [first, last] that some live process runs as (the owner of /proc/PID)."""
    found: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if first <= uid <= last:
                found.add(uid)
    return found


class IdentityLedger:
    """uid:gid reservations in the state database, one per domain."""

    def __init__(self, conn: sqlite3.Connection, first: int, last: int) -> None:
        self.conn = conn
        self.first = first
        self.last = last
        with write_transaction(conn):
            conn.execute(_SCHEMA)

    def reserve(self, domain: str) -> int:
        """The domain's id: the one it holds already, else the lowest free one."""
        with write_transaction(self.conn) as conn:
            row = conn.execute("SELECT id FROM vm_identities WHERE domain=?", (domain,)).fetchone()
            if row is not None:
                return int(row[0])
            taken = {
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM vm_identities WHERE id BETWEEN ? AND ?",
                    (self.first, self.last),
                )
            }
            # Another state directory (or anything else) may run processes under an id
            # of this range: those are in use too (the ledger is per state directory,
            # uids are per host).
            taken |= _running_uids(self.first, self.last)
            n = self.first
            while n <= self.last and (n in taken or _named(n)):
                n += 1
            if n > self.last:
                raise SecurityError(
                    PREFIX_INTERNAL + f"no free QEMU identity left in vm_id_range "
                    f"{self.first}-{self.last} for domain '{domain}'"
                )
            conn.execute(
                "INSERT INTO vm_identities(id, domain, pid, pid_start, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (n, domain, os.getpid(), start_time(os.getpid()), time.time()),
            )
            return n

    def release(self, domain: str) -> int | None:
        with write_transaction(self.conn) as conn:
            row = conn.execute("SELECT id FROM vm_identities WHERE domain=?", (domain,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM vm_identities WHERE domain=?", (domain,))
            return int(row[0])

    def owner(self, n: int) -> str | None:
        row = self.conn.execute("SELECT domain FROM vm_identities WHERE id=?", (n,)).fetchone()
        return None if row is None else str(row[0])

    def holders(self) -> list[VmIdentity]:
        return [
            VmIdentity(str(d), int(i), int(p), None if s is None else int(s))
            for i, d, p, s in self.conn.execute(
                "SELECT id, domain, pid, pid_start FROM vm_identities ORDER BY id"
            )
        ]
