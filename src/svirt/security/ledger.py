"""The MCS ledger's one interface, and the choice of its store (``ledger`` in svirt.conf).

Two stores implement :class:`Ledger`:

- :class:`svirt.security.mcs.McsLedger`: sqlite in the state directory, this host only
  (the default);
- :class:`svirt.security.fleet.EtcdLedger`: an etcd cluster shared by the hosts that
  share storage, every pair reserved by a transaction and bound to the host's lease.

Callers (the SELinux driver, the manager, doctor) use only this interface. Another
per-VM reservation (the DAC identity uid:gid of a range) belongs behind the same seam:
the etcd store's generic ``claim``/``unclaim`` of a name in a namespace
(:meth:`svirt.security.fleet.FleetClient.claim`) is what such a ledger would call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from svirt.conf import Config

if TYPE_CHECKING:
    from svirt.security.mcs import Reservation

__all__ = ["Ledger", "open_ledger"]


class Ledger(Protocol):
    """Where MCS levels are reserved. Levels are canonical range strings (``s0:c1,c2``)."""

    def allocate(self, domain: str) -> str:
        """Reserve a free category pair for a dynamic label and return its level."""
        ...

    def reserve(
        self, domain: str, level: str, *, static: bool = False, label: str | None = None
    ) -> None:
        """Record a level already in use (static label, reconnect); idempotent for the
        same domain, refused with libvirt's text for another."""
        ...

    def release(self, domain: str) -> list[str]:
        """Release every level of a domain (never fails for want of the store)."""
        ...

    def reservations(self) -> Iterator[Reservation]: ...

    def owner(self, level: str) -> str | None:
        """The domain of this host holding a level, else None."""
        ...

    def holders(self) -> list[tuple[str, int]]: ...

    def levels_of(self, domain: str) -> list[str]: ...

    def preview(self) -> AbstractContextManager[None]:
        """Within this block an allocation reserves nothing outside the caller's
        (rolled back) database transaction: ``label --dry-run``."""
        ...

    def held_elsewhere(self, level: str) -> str | None:
        """Who else holds a level (``domain D on host H``), for messages; None if nobody."""
        ...

    def record_files(self, domain: str, paths: list[str]) -> None:
        """Record that this host labelled these (possibly shared) files for ``domain``,
        until the domain's levels are released."""
        ...

    def file_holders(self, path: str) -> list[tuple[str, str]]:
        """(host, domain) of every host that recorded ``path``."""
        ...


def open_ledger(
    cfg: Config, conn: sqlite3.Connection, sens: int, cat_min: int, cat_max: int
) -> Ledger:
    """The ledger ``cfg.ledger`` names, over the host's state database."""
    if cfg.ledger == "etcd":
        from svirt.security.fleet import EtcdLedger, FleetSettings

        return EtcdLedger(conn, sens, cat_min, cat_max, FleetSettings.from_config(cfg))
    from svirt.security.mcs import McsLedger

    return McsLedger(conn, sens, cat_min, cat_max)
