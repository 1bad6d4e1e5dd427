"""The fleet ledger: MCS pairs reserved cluster-wide in etcd (``ledger = "etcd"``).

Hosts that share storage need a VM's category pair unique across all of them. Each pair
is one etcd key, created by a transaction only if absent (``create_revision == 0``) and
bound to the host's lease: while any host holds a pair nobody else can create it, and
the pairs of a host that dies come back when its lease expires.

Layout under ``etcd_prefix`` (``P``)::

    P/pair/NNNNNNN            one key per reserved pair (index in PairSpace order)
    P/level/LEVEL             a reserved dynamic level that is not one pair
    P/level/LEVEL/HOST\\0DOMAIN  one key per holder of a static label (host lease): several
                              domains on any hosts may share one (issue 14)
    P/held/HOST/LEVEL         the host's index of its own reservations (same lease);
                              ``LEVEL\\0DOMAIN`` for a static label
    P/hosts/HOST              the host's presence (its lease)
    P/sticky/DOMAIN           a domain whose pair follows it (no lease)
    P/handover/HOST/DOMAIN    a pair handed to HOST for DOMAIN (no lease)
    P/file/PATH\\0HOST\\0DOMAIN  a shared file labelled by HOST for DOMAIN (host lease)

Allocation is O(1) in the occupancy: the pair indices are cut into blocks of
:data:`BLOCK` consecutive indices; a draw reads the occupied keys of one random block (a
bounded range read), picks a free pair of it uniformly and creates it in one
transaction. See docs/design.md for why this and not draw-and-retry.

A static label never takes a pair key: each holder has its own key under ``P/level/``,
which every dynamic draw reads in the transaction that creates its pair (and gives the
pair back if a static label dominates it), while a static label is created only if the
pair key of its level is absent, so a static label never equals a dynamic level.

Each host keeps a mirror of its own reservations in its state database
(``fleet_reservations``), so that listing, ``recover`` and ``stop`` never need the
cluster; releases that cannot reach etcd wait in ``fleet_pending`` and are retried by
the host's keeper (a small process started on demand, one per state directory, that
keeps the host's lease alive while the host holds anything, and exits when it holds
nothing).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from svirt.conf import Config
from svirt.context import Level, MLSRange
from svirt.errors import PREFIX_INTERNAL, SecurityError
from svirt.host.procs import pid_alive
from svirt.security.mcs import PairSpace, Reservation, shared_static_refusal, static_reach
from svirt.state.db import readonly_uri, write_transaction

__all__ = [
    "BLOCK",
    "EtcdLedger",
    "FleetClient",
    "FleetSettings",
    "FleetUnavailable",
    "LeaseGone",
    "ensure_keeper",
    "fleet_status",
    "keeper_pid",
    "level_owners",
    "remote_file_uses",
    "run_keeper",
]

log = logging.getLogger(__name__)

BLOCK = 512  # pair indices per block read by one draw
_WIDTH = 7  # digits of a pair index in its key (523,776 pairs in c0.c1023)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_reservations (
    level TEXT NOT NULL,
    domain TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,          -- the etcd key that holds it
    mod INTEGER NOT NULL,       -- its mod_revision when we wrote it (release compares it)
    sticky INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (level, domain)  -- a static label may have several holders (issue 14)
);
CREATE INDEX IF NOT EXISTS fleet_reservations_domain ON fleet_reservations(domain);
CREATE TABLE IF NOT EXISTS fleet_pending (key TEXT PRIMARY KEY, mod INTEGER NOT NULL,
    level TEXT NOT NULL, queued REAL NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Writes whose outcome is unknown (no answer: they may still commit) of reservations that
-- were never recorded: undone once etcd answers, only while KEY still holds VALUE.
CREATE TABLE IF NOT EXISTS fleet_undo (key TEXT NOT NULL, value TEXT NOT NULL,
    ops TEXT NOT NULL, level TEXT NOT NULL, domain TEXT NOT NULL, kind TEXT NOT NULL,
    queued REAL NOT NULL, PRIMARY KEY (key, value));
"""


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """The mirror's tables; one made before issue 14 (level its only key) is rekeyed by
    (level, domain), copying its rows."""
    with write_transaction(conn):
        keys = [r[1] for r in conn.execute("PRAGMA table_info(fleet_reservations)") if r[5]]
        if keys == ["level"]:
            conn.execute("ALTER TABLE fleet_reservations RENAME TO fleet_reservations_old")
            conn.execute("DROP INDEX IF EXISTS fleet_reservations_domain")
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        if keys == ["level"]:
            conn.execute("INSERT INTO fleet_reservations SELECT * FROM fleet_reservations_old")
            conn.execute("DROP TABLE fleet_reservations_old")


class FleetUnavailable(SecurityError):
    """The etcd cluster cannot be reached or has no quorum."""


class _AllFailed(Exception):
    """Every endpoint failed one request (the last reason is the message)."""


class LeaseGone(SecurityError):
    """etcd no longer knows the host's lease (it expired)."""


@dataclass(frozen=True, slots=True)
class FleetSettings:
    endpoints: tuple[str, ...]
    prefix: str
    host_id: str
    ttl: int
    timeout: float
    state_dir: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    keep_labels: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: Config) -> FleetSettings:
        return cls(
            endpoints=cfg.etcd_endpoints,
            prefix=cfg.etcd_prefix,
            host_id=cfg.host_id or _machine_id(),
            ttl=cfg.etcd_lease_ttl,
            timeout=cfg.etcd_timeout,
            state_dir=str(cfg.state_dir),
            ca=str(cfg.etcd_ca) if cfg.etcd_ca else None,
            cert=str(cfg.etcd_cert) if cfg.etcd_cert else None,
            key=str(cfg.etcd_key) if cfg.etcd_key else None,
            keep_labels=cfg.keep_labels,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FleetSettings:
        d = json.loads(text)
        d["endpoints"] = tuple(d["endpoints"])
        d["keep_labels"] = tuple(d["keep_labels"])
        return cls(**d)

    def sticky(self, domain: str) -> bool:
        return "*" in self.keep_labels or domain in self.keep_labels


def _machine_id() -> str:
    try:
        mid = Path("/etc/machine-id").read_text().strip()
    except OSError as exc:
        raise SecurityError(
            f"cannot read /etc/machine-id for the fleet host id: {exc.strerror}; "
            "set host_id in svirt.conf"
        ) from None
    if not mid:
        raise SecurityError("/etc/machine-id is empty; set host_id in svirt.conf")
    return mid


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


# --- the client ------------------------------------------------------------------------


class FleetClient:
    """etcd's v3 API through its JSON gateway, with etcd3gw's maintained client for the
    transport (sessions, TLS, error mapping) and failover across the endpoints."""

    def __init__(self, settings: FleetSettings) -> None:
        from etcd3gw.client import Etcd3Client

        self.settings = settings
        self.clients: list[Any] = []
        for ep in settings.endpoints:
            scheme, _, rest = ep.partition("://")
            host, _, port = rest.rstrip("/").rpartition(":")
            self.clients.append(
                Etcd3Client(
                    host=host.strip("[]"),
                    port=int(port),
                    protocol=scheme,
                    ca_cert=settings.ca,
                    cert_key=settings.key,
                    cert_cert=settings.cert,
                    api_path="/v3/",
                )
            )
        self._first = random.randrange(len(self.clients))
        # Per request, not only on the session: requests lets REQUESTS_CA_BUNDLE in the
        # environment override a session's CA (requests issue 3829).
        self._tls: dict[str, Any] = {
            "timeout": settings.timeout,
            "verify": settings.ca if settings.ca else True,
        }
        if settings.cert and settings.key:
            self._tls["cert"] = (settings.cert, settings.key)
        self._checked = 0.0  # when a member last said it has a leader

    def unavailable(self, reason: str) -> FleetUnavailable:
        return FleetUnavailable(
            f"etcd cluster unreachable or without quorum at {', '.join(self.settings.endpoints)}"
            f": {reason}"
        )

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One request, to the first endpoint that answers. While a member says the
        cluster has a leader (an election after a member died takes about a second),
        a request every endpoint failed is tried again, for at most three timeouts;
        without a leader it fails at once."""
        deadline = time.monotonic() + 3 * self.settings.timeout
        while True:
            try:
                return self._post_once(path, payload)
            except _AllFailed as exc:
                if time.monotonic() > deadline:
                    raise self.unavailable(str(exc)) from None
                self._checked = 0.0
                self.check()
                time.sleep(0.05)

    def _post_once(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        last = "no endpoint"
        n = len(self.clients)
        for i in range(n):
            idx = (self._first + i) % n
            client = self.clients[idx]
            try:
                resp = client.session.post(client.get_url(path), json=payload, **self._tls)
            except OSError as exc:  # requests' ConnectionError/Timeout are OSErrors
                last = f"{self.settings.endpoints[idx]}: {_reason(exc)}"
                continue
            if resp.status_code != 200:
                try:
                    detail = str(resp.json().get("error") or resp.text)
                except ValueError:
                    detail = resp.text
                if resp.status_code in (503, 504, 408) or any(
                    m in detail for m in ("leader changed", "no leader", "timed out")
                ):
                    last = f"{self.settings.endpoints[idx]}: {detail.strip()[:120]}"
                    continue
                if "lease not found" in detail:
                    raise LeaseGone(detail)
                raise SecurityError(f"etcd at {self.settings.endpoints[idx]}: {detail.strip()}")
            self._first = idx
            result: dict[str, Any] = resp.json()
            return result
        raise _AllFailed(last)

    def check(self) -> None:
        """Fail at once unless an endpoint answers and its member has a leader."""
        if time.monotonic() - self._checked < 1.0:
            return
        last = "no endpoint"
        n = len(self.clients)
        for i in range(n):
            idx = (self._first + i) % n
            client = self.clients[idx]
            try:
                resp = client.session.post(
                    client.get_url("/maintenance/status"), json={}, **self._tls
                )
                status = resp.json() if resp.status_code == 200 else {}
            except (OSError, ValueError) as exc:
                last = f"{self.settings.endpoints[idx]}: {_reason(exc)}"
                continue
            if int(status.get("leader", 0) or 0) == 0:
                last = f"{self.settings.endpoints[idx]}: no leader"
                continue
            self._first = idx
            self._checked = time.monotonic()
            return
        raise self.unavailable(last)

    # --- operations --------------------------------------------------------------------

    def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        return self.post(
            "/kv/txn",
            {"compare": list(compare), "success": list(success), "failure": list(failure)},
        )

    def get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """(value, mod_revision) of a key, None when absent."""
        kvs = self.post("/kv/range", {"key": _b64(key)}).get("kvs") or []
        if not kvs:
            return None
        return json.loads(_unb64(kvs[0].get("value", ""))), int(kvs[0]["mod_revision"])

    def range(
        self, start: str | bytes, end: str | bytes, *, keys_only: bool = False
    ) -> list[tuple[bytes, bytes, int]]:
        """(key, value, mod_revision) of every key in [start, end)."""
        payload: dict[str, Any] = {"key": _b64(start), "range_end": _b64(end)}
        if keys_only:
            payload["keys_only"] = True
        kvs = self.post("/kv/range", payload).get("kvs") or []
        return [
            (_unb64(kv["key"]), _unb64(kv.get("value", "")), int(kv["mod_revision"])) for kv in kvs
        ]

    def prefix(self, prefix: str, *, keys_only: bool = False) -> list[tuple[bytes, bytes, int]]:
        raw = prefix.encode()
        return self.range(raw, _prefix_end(raw), keys_only=keys_only)

    def grant(self, ttl: int) -> int:
        return int(self.post("/lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def keepalive(self, lease: int) -> int:
        result = self.post("/lease/keepalive", {"ID": lease}).get("result") or {}
        return int(result.get("TTL", -1))

    def revoke(self, lease: int) -> None:
        with contextlib.suppress(Exception):
            self.post("/kv/lease/revoke", {"ID": lease})

    def claim(
        self, namespace: str, name: str, value: dict[str, Any], lease: int | None
    ) -> tuple[bool, int]:
        """Create ``P/NAMESPACE/NAME`` only if absent, bound to ``lease``: the generic
        reservation (MCS pairs use it; a per-VM uid:gid ledger would too). Returns
        (created, revision)."""
        key = f"{self.settings.prefix}{namespace}/{name}"
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(json.dumps(value))}
        if lease:
            put["lease"] = lease
        res = self.txn([_absent(key)], [{"request_put": put}])
        return bool(res.get("succeeded")), int(res["header"]["revision"])


def _reason(exc: BaseException) -> str:
    """A short reason for a failed request (the class, and for TLS its verdict)."""
    text = str(exc)
    for mark in (
        "CERTIFICATE_VERIFY_FAILED",
        "certificate required",
        "SSLV3_ALERT",
        "WRONG_VERSION",
    ):
        if mark in text:
            return f"{type(exc).__name__} ({mark})"
    return type(exc).__name__


def _absent(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}


def _mod_is(key: str, mod: int) -> dict[str, Any]:
    return {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": mod}


def _value_is(key: str, text: str) -> dict[str, Any]:
    return {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(text)}


def _text(value: dict[str, Any]) -> str:
    """The exact text :func:`_put` writes for a value (what an undo compares)."""
    return json.dumps(value, sort_keys=True)


def _put(key: str, value: dict[str, Any] | str, lease: int | None = None) -> dict[str, Any]:
    text = value if isinstance(value, str) else _text(value)
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(text)}
    if lease:
        req["lease"] = lease
    return {"request_put": req}


def _delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


# --- the ledger ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    handover: dict[str, Any] | None
    sticky: dict[str, Any] | None
    statics: list[tuple[str, frozenset[int]]]
    taken: set[int] | None  # occupied pair indices of the first block (None: not read)


class EtcdLedger:
    """The MCS ledger on etcd, with this host's reservations mirrored in sqlite."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        sens: int,
        cat_min: int,
        cat_max: int,
        settings: FleetSettings,
        *,
        rng: random.Random | None = None,
        client: FleetClient | None = None,
        keeper: bool = True,
    ) -> None:
        if cat_max - cat_min + 1 < 8:
            raise SecurityError(PREFIX_INTERNAL + f"Category range c{cat_min}-c{cat_max} too small")
        self.conn = conn
        self.space = PairSpace(sens, cat_min, cat_max)
        self.settings = settings
        self.host = settings.host_id
        self.rng = rng or random.SystemRandom()
        self.client = client or FleetClient(settings)
        self.spawn_keeper = keeper
        self._preview = False
        self.blocks_read = 0  # for the bench: ranges read by allocations
        # (key, text written) → (undo JSON, level, domain, kind) of the etcd writes of the
        # current :meth:`_writing` block that may have been applied.
        self._unsure: dict[tuple[str, str], tuple[str, str, str, str]] | None = None
        _ensure_schema(conn)

    # --- keys ----------------------------------------------------------------------------

    @property
    def p(self) -> str:
        return self.settings.prefix

    def _key_of(self, level: str) -> str:
        idx = self.space.index_of(level)
        if idx is not None:
            return f"{self.p}pair/{idx:0{_WIDTH}d}"
        return f"{self.p}level/{level}"

    def _held(self, level: str) -> str:
        """The index key of a held name (:func:`_held_name`)."""
        return f"{self.p}held/{self.host}/{level}"

    def _static_key(self, level: str, domain: str) -> str:
        return f"{self.p}level/{level}/{self.host}\0{domain}"

    def _value(
        self, domain: str, kind: str, *, sticky: bool = False, level: str | None = None
    ) -> dict[str, Any]:
        """The value of a reservation key (``level`` is kept for non-pair levels, which
        the static-label check reads back)."""
        value = {
            "host": self.host,
            "domain": domain,
            "kind": kind,
            "pid": os.getpid(),
            "sticky": sticky,
            "nonce": uuid.uuid4().hex,
            "created": time.time(),
        }
        if level is not None and (kind == "static" or self.space.index_of(level) is None):
            value["level"] = level
        return value

    # --- writes whose outcome may be unknown ------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The database transaction around a reservation's etcd writes. A write etcd did
        not answer (timeout, lost connection, a leader that lost its quorum) is not a
        failed write: a member that took the proposal may commit it once its quorum is
        back. So every write registered here (:meth:`_may_write`) that was not found
        refused is, if the transaction does not commit (nothing recorded here), queued
        in ``fleet_undo``; :meth:`flush` undoes it once etcd answers, and only while its
        key still holds the exact value written here (it carries a nonce)."""
        if self._unsure is not None:
            yield  # nested: the outer block queues
            return
        self._unsure = {}
        try:
            with write_transaction(self.conn):
                yield
        except BaseException:
            self._queue_undo(self._unsure)
            raise
        finally:
            self._unsure = None

    def _may_write(
        self,
        key: str,
        value: dict[str, Any],
        undo: Any,
        level: str,
        domain: str,
        kind: str = "ops",
    ) -> None:
        """Register a write about to be sent: ``undo`` (etcd operations, or for a handover
        what it replaced) is applied if it ends unrecorded while ``key`` holds ``value``."""
        if self._unsure is not None and not self._preview:
            self._unsure[(key, _text(value))] = (json.dumps(undo), level, domain, kind)

    def _not_written(self, key: str, value: dict[str, Any]) -> None:
        """etcd answered that the write was not applied (or it was taken back)."""
        if self._unsure is not None:
            self._unsure.pop((key, _text(value)), None)

    def _queue_undo(self, unsure: dict[tuple[str, str], tuple[str, str, str, str]]) -> None:
        if not unsure:
            return
        try:
            with write_transaction(self.conn):
                self.conn.executemany(
                    "INSERT OR REPLACE INTO fleet_undo VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (key, text, undo, level, domain, kind, time.time())
                        for (key, text), (undo, level, domain, kind) in unsure.items()
                    ],
                )
        except sqlite3.Error as exc:  # the write's own error is the one reported
            log.error("cannot queue the undo of %d unanswered etcd writes: %s", len(unsure), exc)
            return
        try:
            self._after_write()  # the keeper retries the undo until etcd answers
        except OSError as exc:
            log.error("cannot start the fleet keeper: %s", exc)

    def _undo(self, key: str, text: str, undo: Any, level: str, domain: str, kind: str) -> None:
        """Undo one unrecorded write if ``key`` still holds it; the row goes once etcd
        answered (an undo that itself got no answer stays queued: it is idempotent)."""
        with write_transaction(self.conn):
            row = self.conn.execute(
                "SELECT 1 FROM fleet_reservations WHERE level=? AND domain=?", (level, domain)
            ).fetchone()
            if kind != "handover":
                ops = undo
            else:
                # A handover reported failed: the pair is this host's again (under its
                # lease while it still runs the domain), free if the domain stopped.
                gone = _delete(f"{self.p}handover/{undo['dest']}/{domain}")
                if undo["sticky"]:
                    prev = undo["prev"] or self._value(domain, "dynamic", sticky=True, level=level)
                    ops = [_put(key, prev), gone]
                elif row is not None:
                    lease = self._lease()
                    value = self._value(domain, "dynamic", level=level)
                    ops = [_put(key, value, lease), _put(self._held(level), {"key": key}, lease)]
                    ops.append(gone)
                else:
                    ops = [_delete(key), gone]
            res = self.client.txn([_value_is(key, text)], ops)
            if res.get("succeeded"):
                log.warning(
                    "undid an etcd write for domain %s (level %s) that was reported failed "
                    "but committed later",
                    domain,
                    level,
                )
                if kind == "handover" and row is not None:
                    self.conn.execute(
                        "UPDATE fleet_reservations SET mod=? WHERE level=? AND domain=?",
                        (int(res["header"]["revision"]), level, domain),
                    )
            self.conn.execute("DELETE FROM fleet_undo WHERE key=? AND value=?", (key, text))

    # --- the lease -------------------------------------------------------------------------

    def _lease(self) -> int:
        """The host's live lease (granting one if needed); call inside a write transaction."""
        row = self.conn.execute("SELECT value FROM fleet_meta WHERE key='lease'").fetchone()
        if row is not None:
            lease = int(row[0])
            renewed = self.conn.execute(
                "SELECT value FROM fleet_meta WHERE key='renewed'"
            ).fetchone()
            # A keeper starved of CPU must not let the lease lapse under a writer: renew
            # it here too when its last renewal is a third of the TTL old.
            if renewed is not None and time.time() - float(renewed[0]) < self.settings.ttl / 3:
                return lease
            if self.client.keepalive(lease) > 0:
                self._renewed()
                return lease
            self._drop_lease()
        lease = self.client.grant(self.settings.ttl)
        self._renewed()
        self.conn.execute("INSERT OR REPLACE INTO fleet_meta VALUES ('lease', ?)", (str(lease),))
        self.client.txn(
            [],
            [_put(f"{self.p}hosts/{self.host}", {"host": self.host, "lease": lease}, lease)],
        )
        self._reassert(lease)
        return lease

    def _drop_lease(self) -> None:
        self.conn.execute("DELETE FROM fleet_meta WHERE key IN ('lease', 'renewed')")

    def _renewed(self) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO fleet_meta VALUES ('renewed', ?)", (str(time.time()),)
        )

    def _reassert(self, lease: int) -> None:
        """After a new lease: bind this host's reservations to it again. A pair another
        host took while ours lapsed is reported; it is never taken back."""
        rows = self.conn.execute(
            "SELECT level, domain, kind, key, mod FROM fleet_reservations WHERE sticky=0"
        ).fetchall()
        for level, domain, kind, key, _mod in rows:
            value = self._value(domain, kind, level=level)
            held = self._held(_held_name(level, domain, kind))
            # A static label comes back only while no dynamic domain took its level.
            guard = [_absent(self._key_of(level))] if kind == "static" else []
            res = self.client.txn(
                [_absent(key), *guard],
                [_put(key, value, lease), _put(held, {"key": key}, lease)],
                [{"request_range": {"key": _b64(key)}}],
            )
            if res.get("succeeded"):
                self.conn.execute(
                    "UPDATE fleet_reservations SET mod=? WHERE level=? AND domain=?",
                    (int(res["header"]["revision"]), level, domain),
                )
                continue
            kvs = res["responses"][0]["response_range"].get("kvs") or []
            cur = json.loads(_unb64(kvs[0].get("value", ""))) if kvs else {}
            cur_mod = int(kvs[0]["mod_revision"]) if kvs else 0
            if cur.get("host") == self.host and cur.get("domain") == domain:
                res = self.client.txn(
                    [_mod_is(key, cur_mod), *guard],
                    [_put(key, value, lease), _put(held, {"key": key}, lease)],
                )
                if res.get("succeeded"):
                    self.conn.execute(
                        "UPDATE fleet_reservations SET mod=? WHERE level=? AND domain=?",
                        (int(res["header"]["revision"]), level, domain),
                    )
                    continue
            if not cur and guard:
                got = self.client.get(self._key_of(level))
                cur = got[0] if got is not None else {}
            log.error(
                "MCS level %s of domain %s lapsed while this host's lease was gone and is "
                "now held by %s: the two domains are not isolated from each other",
                level,
                domain,
                _who(cur),
            )

    def _with_lease(self, fn: Any) -> Any:
        """Run ``fn(lease)``; if etcd says the lease is gone, get a new one and rerun."""
        lease = self._lease()
        try:
            return fn(lease)
        except LeaseGone:
            pass
        self._drop_lease()
        return fn(self._lease())

    # --- allocation ------------------------------------------------------------------------

    def _block_range(self, block: int) -> tuple[str, str, int, int]:
        lo = block * BLOCK
        hi = min(lo + BLOCK, self.space.size)
        return f"{self.p}pair/{lo:0{_WIDTH}d}", f"{self.p}pair/{hi:0{_WIDTH}d}", lo, hi

    def _reads(self, domain: str, block: int | None) -> list[dict[str, Any]]:
        """The reads of a snapshot: the domain's handover and sticky keys, the static
        labels and (with ``block``) the occupied keys of one block."""
        level_prefix = f"{self.p}level/".encode()
        ranges: list[dict[str, Any]] = [
            {"key": _b64(f"{self.p}handover/{self.host}/{domain}")},
            {"key": _b64(f"{self.p}sticky/{domain}")},
            {"key": _b64(level_prefix), "range_end": _b64(_prefix_end(level_prefix))},
        ]
        if block is not None:
            start, end, _lo, _hi = self._block_range(block)
            ranges.append({"key": _b64(start), "range_end": _b64(end), "keys_only": True})
        return [{"request_range": r} for r in ranges]

    def _parse(self, responses: list[dict[str, Any]]) -> _Snapshot:
        kvs = [(r["response_range"].get("kvs") or []) for r in responses]

        def value(i: int) -> dict[str, Any] | None:
            return json.loads(_unb64(kvs[i][0].get("value", ""))) if kvs[i] else None

        taken = None
        if len(kvs) > 3:
            self.blocks_read += 1
            taken = {int(_unb64(kv["key"]).rsplit(b"/", 1)[1]) for kv in kvs[3]}
        return _Snapshot(value(0), value(1), self._statics(responses[2]), taken)

    def _statics(self, response: dict[str, Any]) -> list[tuple[str, frozenset[int]]]:
        """(owner, categories) of the static labels in one read of ``P/level/``."""
        statics = []
        for kv in response["response_range"].get("kvs") or []:
            val = json.loads(_unb64(kv.get("value", "")))
            if val.get("kind") == "static":
                statics.append((str(val["level"]), f"{val['domain']} on host {val['host']}"))
        return static_reach(statics, self.space.cat_min, self.space.cat_max)

    def _snapshot(self, domain: str, block: int) -> _Snapshot:
        """One read (a transaction of ranges, so one revision)."""
        return self._parse(self.client.txn([], self._reads(domain, block))["responses"])

    def _blind(self, domain: str, block: int) -> tuple[str | None, _Snapshot]:
        """One transaction: create a random pair of the block if it is free, and read
        the snapshot (with the block's occupied keys when the pair was taken). At
        occupancy p this reserves a pair in one round trip with probability 1-p; else
        the snapshot serves the block draw. A pair created for a domain that turns out
        to have a pair of its own (handover, sticky) or that a static label dominates
        is deleted again. Returns (level or None, snapshot)."""
        _start, _end, lo, hi = self._block_range(block)
        idx = self.rng.randrange(lo, hi)
        level = self.space.level_of(idx)
        key = self._key_of(level)
        value = self._value(domain, "dynamic", level=level)
        self._may_write(key, value, [_delete(key), _delete(self._held(level))], level, domain)

        def attempt(lease: int) -> dict[str, Any]:
            return dict(
                self.client.txn(
                    [_absent(key)],
                    [
                        _put(key, value, lease),
                        _put(self._held(level), {"key": key}, lease),
                        *self._reads(domain, None),
                    ],
                    [*self._reads(domain, block), {"request_range": {"key": _b64(key)}}],
                )
            )

        res = self._with_lease(attempt)
        if not res.get("succeeded"):
            mine = res["responses"][4]["response_range"].get("kvs") or []
            if (
                not mine
                or json.loads(_unb64(mine[0].get("value", ""))).get("nonce") != value["nonce"]
            ):
                self._not_written(key, value)
                return None, self._parse(res["responses"][:4])
            # A retried request whose first try was applied: ours after all.
            rev = int(mine[0]["mod_revision"])
            snap = self._parse(res["responses"][:3])
        else:
            rev = int(res["header"]["revision"])
            snap = self._parse(res["responses"][2:5])
        cats = self.space.categories_of(idx)
        if (
            snap.handover is None
            and snap.sticky is None
            and not any(cats <= c for _o, c in snap.statics)
        ):
            self._mirror(level, domain, "dynamic", key, rev, False)
            return level, snap
        self.client.txn([_mod_is(key, rev)], [_delete(key), _delete(self._held(level))])
        self._not_written(key, value)
        return None, self._snapshot(domain, block)

    def _free_in_block(
        self, block: int, statics: list[tuple[str, frozenset[int]]], taken: set[int] | None
    ) -> list[int]:
        start, end, lo, hi = self._block_range(block)
        if taken is None:
            self.blocks_read += 1
            taken = {
                int(k.rsplit(b"/", 1)[1])
                for k, _v, _m in self.client.range(start, end, keys_only=True)
            }
        free = [i for i in range(lo, hi) if i not in taken]
        if statics:
            free = [
                i
                for i in free
                if not any(self.space.categories_of(i) <= cats for _o, cats in statics)
            ]
        return free

    def _draw(self, domain: str, snap: _Snapshot, first: int) -> str:
        """Reserve a uniformly drawn free pair (see the module docstring): the snapshot's
        block first, then other random blocks if it had no free pair."""
        nblocks = (self.space.size + BLOCK - 1) // BLOCK
        order = list(range(nblocks))
        order[0], order[first] = order[first], order[0]
        # A block found full is never read twice in one draw.
        for tried in range(nblocks):
            if tried > 0:
                j = self.rng.randrange(tried, nblocks)
                order[tried], order[j] = order[j], order[tried]
            block = order[tried]
            free = self._free_in_block(block, snap.statics, snap.taken if tried == 0 else None)
            while free:
                idx = free.pop(self.rng.randrange(len(free)))
                level = self.space.level_of(idx)
                if self._preview:
                    return level
                if self._create(
                    domain, level, "dynamic", sticky=self.settings.sticky(domain), drawn=True
                ):
                    return level
        raise SecurityError(
            f"no free MCS category pair in c{self.space.cat_min}.c{self.space.cat_max} in "
            f"the fleet: all {self.space.size} pairs are reserved or dominated by static labels"
        )

    def _create(
        self, domain: str, level: str, kind: str, *, sticky: bool = False, drawn: bool = False
    ) -> bool:
        """Create the key of a level for this host (create-if-absent); False if taken.
        A ``drawn`` pair is given back (False) if a static label, read in the same
        transaction, dominates it: a static label created since the draw read them."""
        key = self._key_of(level)
        value = self._value(domain, kind, sticky=sticky, level=level)
        second = f"{self.p}sticky/{domain}" if sticky else self._held(level)
        self._may_write(key, value, [_delete(key), _delete(second)], level, domain)

        def attempt(lease: int) -> dict[str, Any]:
            ops = [_put(key, value, None if sticky else lease)]
            if sticky:
                ops.append(_put(f"{self.p}sticky/{domain}", {"level": level}))
            else:
                ops.append(_put(self._held(level), {"key": key}, lease))
            if drawn:
                ops.append(self._reads(domain, None)[2])
            return dict(
                self.client.txn([_absent(key)], ops, [{"request_range": {"key": _b64(key)}}])
            )

        res = self._with_lease(attempt)
        statics: list[tuple[str, frozenset[int]]] = []
        if not res.get("succeeded"):
            # A retried request whose first try was applied finds its own key: ours.
            kvs = res["responses"][0]["response_range"].get("kvs") or []
            cur = json.loads(_unb64(kvs[0].get("value", ""))) if kvs else {}
            if cur.get("nonce") != value["nonce"]:
                self._not_written(key, value)
                return False
            res = {"header": {"revision": kvs[0]["mod_revision"]}}
            if drawn:
                read = self.client.txn([], [self._reads(domain, None)[2]])
                statics = self._statics(read["responses"][0])
        elif drawn:
            statics = self._statics(res["responses"][2])
        rev = int(res["header"]["revision"])
        cats = Level.parse(level).categories
        if any(cats <= c for _o, c in statics):
            self.client.txn([_mod_is(key, rev)], [_delete(key), _delete(second)])
            self._not_written(key, value)
            return False
        self._mirror(level, domain, kind, key, rev, sticky)
        return True

    def _mirror(self, level: str, domain: str, kind: str, key: str, mod: int, sticky: bool) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO fleet_reservations"
            "(level, domain, kind, key, mod, sticky, created, pid) VALUES (?,?,?,?,?,?,?,?)",
            (level, domain, kind, key, mod, int(sticky), time.time(), os.getpid()),
        )
        self.conn.execute("DELETE FROM fleet_pending WHERE key=?", (key,))

    def _adopt(
        self,
        domain: str,
        level: str,
        kind: str,
        key: str,
        cur: tuple[dict[str, Any], int],
        sticky: bool,
    ) -> bool:
        """Take over a key left for this host (handover, or a sticky domain's pair)."""
        value = self._value(domain, kind, sticky=sticky, level=level)
        prev, mod = cur
        # Undone unrecorded, it is put back as it was (a pair that follows the domain, or
        # handed to this host), else it was an unrecorded key of this host: deleted.
        undo = [_put(key, prev)] if prev.get("sticky") or prev.get("handover_from") else []
        if prev.get("handover_from"):
            undo.append(_put(f"{self.p}handover/{self.host}/{domain}", {"level": level}))
        if not undo:
            undo.append(_delete(key))
        if not sticky:
            undo.append(_delete(self._held(level)))
        self._may_write(key, value, undo, level, domain)

        def attempt(lease: int) -> dict[str, Any]:
            ops = [
                _put(key, value, None if sticky else lease),
                _delete(f"{self.p}handover/{self.host}/{domain}"),
            ]
            if not sticky:
                ops.append(_put(self._held(level), {"key": key}, lease))
            return dict(self.client.txn([_mod_is(key, mod)], ops))

        res = self._with_lease(attempt)
        if not res.get("succeeded"):
            self._not_written(key, value)
            return False
        self._mirror(level, domain, kind, key, int(res["header"]["revision"]), sticky)
        return True

    def _followed(self, domain: str, snap: _Snapshot) -> str | None:
        """The level handed over to this host for ``domain``, or its sticky pair when it
        is this host's to use; adopted. None when the domain has no such pair."""
        for got in (snap.handover, snap.sticky):
            if got is None:
                continue
            level = str(got["level"])
            key = self._key_of(level)
            cur = self.client.get(key)
            if cur is None:
                continue  # lapsed: draw a new pair
            val = cur[0]
            if val.get("domain") != domain:
                continue
            if val.get("host") != self.host:
                raise SecurityError(
                    PREFIX_INTERNAL
                    + f"the MCS level {level} of domain {domain} follows it and is held by "
                    f"host {val.get('host')}; run 'svirt migrate-label {domain} --to "
                    f"{self.host}' there first (or here, if that host is down and its lease "
                    "has expired)"
                )
            if self._preview:
                return level
            if self._adopt(
                domain, level, str(val.get("kind", "dynamic")), key, cur, bool(val.get("sticky"))
            ):
                return level
        return None

    # --- the Ledger interface --------------------------------------------------------------

    def allocate(self, domain: str) -> str:
        self.flush()
        self.client.check()
        with self._writing():
            block = self.rng.randrange((self.space.size + BLOCK - 1) // BLOCK)
            if self._preview or self.settings.sticky(domain):
                got, snap = None, self._snapshot(domain, block)
            else:
                got, snap = self._blind(domain, block)
            level = got or self._followed(domain, snap) or self._draw(domain, snap, block)
        self._after_write()
        return level

    def reserve(
        self, domain: str, level: str, *, static: bool = False, label: str | None = None
    ) -> None:
        canonical = str(MLSRange.parse(level))
        with self._writing():
            rows = self.conn.execute(
                "SELECT domain, kind FROM fleet_reservations WHERE level=?", (canonical,)
            ).fetchall()
            if any(d == domain for d, _k in rows):
                return
            holders = [(f"{d} on host {self.host}", str(k)) for d, k in rows]
            refusal = shared_static_refusal(canonical, label, static, holders, domain)
            if refusal is not None:
                raise SecurityError(refusal)
            self.flush()
            self.client.check()
            if self._preview:
                return
            if static:
                self._reserve_static(domain, canonical, label)
                self._after_write()
                return
            kind = "dynamic"
            # A running dynamic domain found again: its level must not be a static one.
            for _k, v, _m in self.client.prefix(f"{self.p}level/{canonical}/"):
                val = json.loads(v)
                raise SecurityError(
                    PREFIX_INTERNAL
                    + f"MCS level for existing domain label {label or canonical} already "
                    f"reserved (by {_who(val)})"
                )
            if self._create(domain, canonical, kind):
                self._after_write()
                return
            key = self._key_of(canonical)
            cur = self.client.get(key)
            if cur is not None:
                val = cur[0]
                mine = val.get("host") == self.host and val.get("domain") == domain
                if mine and self._adopt(domain, canonical, kind, key, cur, bool(val.get("sticky"))):
                    self._after_write()
                    return
                raise SecurityError(
                    PREFIX_INTERNAL
                    + f"MCS level for existing domain label {label or canonical} already "
                    f"reserved (by {_who(val)})"
                )
            raise SecurityError(
                PREFIX_INTERNAL + f"MCS level {canonical} changed while reserving it; retry"
            )

    def _reserve_static(self, domain: str, level: str, label: str | None) -> None:
        """This host's holder key of a static label (any number of domains on any hosts
        share one), created only while no dynamic domain holds the level."""
        key = self._static_key(level, domain)
        held = self._held(_held_name(level, domain, "static"))
        guard = self._key_of(level)
        value = self._value(domain, "static", level=level)
        self._may_write(key, value, [_delete(key), _delete(held)], level, domain)

        def attempt(lease: int) -> dict[str, Any]:
            return dict(
                self.client.txn(
                    [_absent(guard)],
                    [_put(key, value, lease), _put(held, {"key": key}, lease)],
                    [{"request_range": {"key": _b64(guard)}}],
                )
            )

        res = self._with_lease(attempt)
        if not res.get("succeeded"):
            self._not_written(key, value)
            kvs = res["responses"][0]["response_range"].get("kvs") or []
            cur = json.loads(_unb64(kvs[0].get("value", ""))) if kvs else {}
            who = f"{cur.get('domain')} on host {cur.get('host')}"
            refusal = shared_static_refusal(level, label, True, [(who, "dynamic")], domain)
            raise SecurityError(refusal or f"MCS level {level} is held; retry")
        self._mirror(level, domain, "static", key, int(res["header"]["revision"]), False)

    def release(self, domain: str) -> list[str]:
        """Forget the domain's levels here at once; the etcd keys are deleted now if etcd
        answers, else by the keeper as soon as it does. A sticky pair stays reserved."""
        with write_transaction(self.conn):
            rows = self.conn.execute(
                "SELECT level, key, mod, sticky, kind FROM fleet_reservations WHERE domain=?",
                (domain,),
            ).fetchall()
            for level, key, mod, sticky, kind in rows:
                if not sticky:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO fleet_pending VALUES (?, ?, ?, ?)",
                        (key, mod, _held_name(level, domain, kind), time.time()),
                    )
            self.conn.execute("DELETE FROM fleet_reservations WHERE domain=?", (domain,))
            self._queue_files(domain)
        if not self.conn.in_transaction:
            with contextlib.suppress(FleetUnavailable):
                self.flush()
        return [r[0] for r in rows]

    def flush(self) -> int:
        """Delete the etcd keys of released levels, and undo the unanswered writes of
        reservations never recorded (``fleet_undo``); what etcd cannot take now stays
        queued. Only keys still at the revision we wrote are deleted (a key handed to
        another host since is theirs). Returns how many are still queued."""
        if self.conn.in_transaction:
            return -1
        pending = self.conn.execute("SELECT key, mod, level FROM fleet_pending").fetchall()
        for key, mod, level in pending:
            if int(mod) < 0:  # a shared-file record: ours alone, deleted as is
                self.client.txn([], [_delete(key)])
            else:
                self.client.txn(
                    [_mod_is(key, int(mod))], [_delete(key), _delete(self._held(level))]
                )
            with write_transaction(self.conn):
                self.conn.execute("DELETE FROM fleet_pending WHERE key=? AND mod=?", (key, mod))
        undos = self.conn.execute(
            "SELECT key, value, ops, level, domain, kind FROM fleet_undo ORDER BY queued"
        ).fetchall()
        for key, text, ops, level, domain, kind in undos:
            self._undo(str(key), str(text), json.loads(ops), str(level), str(domain), str(kind))
        return 0

    def reservations(self) -> Iterator[Reservation]:
        for level, domain, kind, created in self.conn.execute(
            "SELECT level, domain, kind, created FROM fleet_reservations ORDER BY created"
        ).fetchall():
            yield Reservation(level, domain, kind, created)

    def owner(self, level: str) -> str | None:
        row = self.conn.execute(
            "SELECT domain FROM fleet_reservations WHERE level=?", (str(MLSRange.parse(level)),)
        ).fetchone()
        return str(row[0]) if row else None

    def holders(self) -> list[tuple[str, int]]:
        return [
            (str(d), int(p))
            for d, p in self.conn.execute("SELECT DISTINCT domain, pid FROM fleet_reservations")
        ]

    def levels_of(self, domain: str) -> list[str]:
        return [
            str(r[0])
            for r in self.conn.execute(
                "SELECT level FROM fleet_reservations WHERE domain=?", (domain,)
            )
        ]

    @contextlib.contextmanager
    def _previewing(self) -> Iterator[None]:
        self._preview = True
        try:
            yield
        finally:
            self._preview = False

    def preview(self) -> AbstractContextManager[None]:
        return self._previewing()

    def held_elsewhere(self, level: str) -> str | None:
        canonical = str(MLSRange.parse(level))
        got = self.client.get(self._key_of(canonical))
        if got is not None and got[0].get("host") != self.host:
            return _who(got[0])
        for _k, v, _m in self.client.prefix(f"{self.p}level/{canonical}/"):
            val = json.loads(v)
            if val.get("host") != self.host:
                return _who(val)
        return None

    # --- fleet operations ------------------------------------------------------------------

    def migrate(self, domain: str, dest: str) -> str:
        """Hand the domain's level to host ``dest`` in one transaction: the key is never
        absent, so no other domain can take the pair in between; ``dest`` adopts it when
        it starts the domain. Returns the level."""
        self.flush()  # a handover reported failed but committed is taken back first
        self.client.check()
        with self._writing():
            prev: dict[str, Any] | None = None
            row = self.conn.execute(
                "SELECT level, key, mod, sticky FROM fleet_reservations WHERE domain=? "
                "AND kind='dynamic'",
                (domain,),
            ).fetchone()
            if row is not None:
                level, key, mod, sticky = str(row[0]), str(row[1]), int(row[2]), bool(row[3])
            else:
                got = self.client.get(f"{self.p}sticky/{domain}")
                if got is None:
                    raise SecurityError(
                        PREFIX_INTERNAL + f"domain {domain} holds no MCS level on this host"
                    )
                level, sticky = str(got[0]["level"]), True
                key = self._key_of(level)
                cur = self.client.get(key)
                holder = str(cur[0].get("host")) if cur is not None else None
                # A sticky pair whose host is gone (no lease left) may be handed over
                # from any host: its VM cannot be running.
                if (
                    cur is None
                    or cur[0].get("domain") != domain
                    or (holder != self.host and self.client.get(f"{self.p}hosts/{holder}"))
                ):
                    raise SecurityError(
                        PREFIX_INTERNAL
                        + f"the MCS level of domain {domain} is not this host's to hand over"
                        + (f" (held by {_who(cur[0])})" if cur is not None else "")
                    )
                prev, mod = cur
            value = {**self._value(domain, "dynamic", sticky=sticky, level=level), "host": dest}
            value["handover_from"] = self.host
            undo = {"dest": dest, "sticky": sticky, "prev": prev}
            self._may_write(key, value, undo, level, domain, "handover")
            res = self.client.txn(
                [_mod_is(key, mod)],
                [
                    _put(key, value),  # no lease until dest adopts it
                    _put(f"{self.p}handover/{dest}/{domain}", {"level": level}),
                    _delete(self._held(level)),
                ],
            )
            if not res.get("succeeded"):
                self._not_written(key, value)
                raise SecurityError(
                    PREFIX_INTERNAL + f"the MCS level of domain {domain} changed; try again"
                )
            # Still ours until this host stops the domain, but releasing it must not
            # delete the key now: revision 0 matches no live key.
            self.conn.execute(
                "UPDATE fleet_reservations SET mod=? WHERE level=? AND domain=?",
                (0, level, domain),
            )
        return level

    def forget(self, domain: str) -> str:
        """Give up the pair that follows a domain (sticky, or handed over and never
        started): allowed on its host, or anywhere once that host's lease is gone, and
        never while this host holds the domain's level. Returns the level."""
        self.client.check()
        if self.levels_of(domain):
            raise SecurityError(
                PREFIX_INTERNAL + f"domain {domain} holds its MCS level here; stop it first"
            )
        got = self.client.get(f"{self.p}sticky/{domain}")
        handovers = [
            (k, json.loads(v))
            for k, v, _m in self.client.prefix(f"{self.p}handover/")
            if k.decode().endswith(f"/{domain}")
        ]
        levels = ([str(got[0]["level"])] if got else []) + [str(v["level"]) for _k, v in handovers]
        if not levels:
            raise SecurityError(PREFIX_INTERNAL + f"no MCS level follows domain {domain}")
        ops = [_delete(f"{self.p}sticky/{domain}")] + [_delete(k.decode()) for k, _v in handovers]
        compare = []
        for level in dict.fromkeys(levels):
            key = self._key_of(level)
            cur = self.client.get(key)
            if cur is None or cur[0].get("domain") != domain:
                continue
            holder = str(cur[0].get("host"))
            if holder != self.host and self.client.get(f"{self.p}hosts/{holder}") is not None:
                raise SecurityError(
                    PREFIX_INTERNAL
                    + f"the MCS level {level} of domain {domain} is held by host {holder}, "
                    "which is up: forget it there"
                )
            compare.append(_mod_is(key, cur[1]))
            ops.append(_delete(key))
        res = self.client.txn(compare, ops)
        if not res.get("succeeded"):
            raise SecurityError(
                PREFIX_INTERNAL + f"the MCS level of domain {domain} changed; try again"
            )
        return levels[0]

    def record_files(self, domain: str, paths: list[str]) -> None:
        """Record that this host labelled these shared files for ``domain`` (host lease)."""
        if not paths or self._preview:
            return
        with self._writing():
            # Each value carries a nonce, so an undo deletes only this write's record.
            values = {p: {"path": p, "nonce": uuid.uuid4().hex} for p in paths}
            for p, v in values.items():
                key = self._file_key(p, domain)
                self._may_write(key, v, [_delete(key)], f"file {p}", domain)

            def attempt(lease: int) -> dict[str, Any]:
                ops = [_put(self._file_key(p, domain), v, lease) for p, v in values.items()]
                return dict(self.client.txn([], ops))

            self._with_lease(attempt)
            self.conn.executemany(
                "INSERT OR REPLACE INTO fleet_meta VALUES (?, ?)",
                [(f"file:{domain}:{p}", p) for p in paths],
            )
        self._after_write()

    def _queue_files(self, domain: str) -> None:
        """Queue the deletion of the domain's shared-file records (in the caller's
        transaction); ``flush`` deletes them."""
        rows = self.conn.execute(
            "SELECT key, value FROM fleet_meta WHERE key LIKE ?", (f"file:{domain}:%",)
        ).fetchall()
        for k, path in rows:
            self.conn.execute(
                "INSERT OR REPLACE INTO fleet_pending VALUES (?, -1, ?, ?)",
                (self._file_key(path, domain), f"file {path}", time.time()),
            )
            self.conn.execute("DELETE FROM fleet_meta WHERE key=?", (k,))

    def _file_key(self, path: str, domain: str) -> str:
        return f"{self.p}file/{path}\0{self.host}\0{domain}"

    def file_holders(self, path: str) -> list[tuple[str, str]]:
        """(host, domain) of every host that labelled ``path`` for a domain it runs."""
        out = []
        for k, _v, _m in self.client.prefix(f"{self.p}file/{path}\0"):
            _p, host, dom = k.decode(errors="replace").rsplit("\0", 2)
            out.append((host, dom))
        return out

    def _after_write(self) -> None:
        if self.spawn_keeper and not self._preview:
            ensure_keeper(self.settings)


def _held_name(level: str, domain: str, kind: str) -> str:
    """The name of a reservation in the host's ``held/`` index: its level, and for a
    static label (which several domains may hold) ``LEVEL\\0DOMAIN``."""
    return f"{level}\0{domain}" if kind == "static" else level


def _who(val: dict[str, Any]) -> str:
    return f"domain {val.get('domain')} on host {val.get('host')}"


# --- the keeper ------------------------------------------------------------------------


def _lock_path(settings: FleetSettings) -> Path:
    return Path(settings.state_dir) / "fleet-keeper.lock"


def ensure_keeper(settings: FleetSettings) -> int | None:
    """Start the host's keeper unless one runs; returns the new keeper's pid.

    The lock is taken here and handed to the keeper (the open file is inherited), so
    two processes cannot both start one."""
    path = _lock_path(settings)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a keeper holds it
        proc = subprocess.Popen(
            [sys.executable, "-m", "svirt.security.fleet", "keeper", str(fd), settings.to_json()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(fd,),
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{proc.pid}\n".encode(), 0)
        return proc.pid
    finally:
        os.close(fd)  # the keeper's copy keeps the lock


def keeper_pid(state_dir: Path) -> int | None:
    """The pid of the keeper of a state directory, if one holds its lock."""
    path = state_dir / "fleet-keeper.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _set_status(conn: sqlite3.Connection, text: str) -> None:
    with write_transaction(conn):
        conn.execute("INSERT OR REPLACE INTO fleet_meta VALUES ('status', ?)", (text,))


def run_keeper(settings: FleetSettings, fd: int | None = None, *, once: bool = False) -> int:
    """Keep this host's lease alive while it holds anything; retry queued releases;
    release what a crashed process reserved in etcd but never recorded here. Exits 0
    when the host holds nothing (or another keeper runs)."""
    from svirt.state.db import connect

    if fd is None:  # run by hand: take the lock here
        fd = os.open(_lock_path(settings), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    conn = connect(Path(settings.state_dir))
    ledger = EtcdLedger(conn, 0, 0, 1023, settings, keeper=False)
    period = max(settings.ttl / 3.0, 0.5)
    lapse_at: float | None = None
    while True:
        if not Path(settings.state_dir).is_dir():
            return 0  # the host's state is gone (a test's temporary directory)
        try:
            _keeper_tick(ledger)
            lapse_at = None
            _set_status(conn, f"ok {time.time():.0f}")
        except FleetUnavailable as exc:
            if lapse_at is None:
                lapse_at = time.time() + settings.ttl
            msg = (
                f"{exc}; this host's running VMs go on, but its MCS reservations lapse "
                f"at {time.strftime('%H:%M:%S', time.localtime(lapse_at))} if it stays "
                "cut off (other hosts may then draw the same pairs)"
            )
            log.warning("%s", msg)
            _set_status(conn, f"partitioned {time.time():.0f} {msg}")
        except Exception as exc:  # keep the lease going whatever one tick met
            log.warning("fleet keeper: %s", exc)
        # Exit when nothing is held: decided under the database lock, and the flock is
        # given up before that lock, so a writer after us sees no keeper and starts one.
        with write_transaction(conn):
            held = conn.execute("SELECT count(*) FROM fleet_reservations WHERE sticky=0").fetchone()
            queued = conn.execute(
                "SELECT (SELECT count(*) FROM fleet_pending) + (SELECT count(*) FROM fleet_undo)"
            ).fetchone()
            files = conn.execute(
                "SELECT count(*) FROM fleet_meta WHERE key LIKE 'file:%'"
            ).fetchone()
            if held[0] == 0 and queued[0] == 0 and files[0] == 0:
                row = conn.execute("SELECT value FROM fleet_meta WHERE key='lease'").fetchone()
                if row is not None:
                    ledger.client.revoke(int(row[0]))
                conn.execute("DELETE FROM fleet_meta WHERE key IN ('lease', 'status')")
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                return 0
        if once:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return 0
        time.sleep(period)


def _keeper_tick(ledger: EtcdLedger) -> None:
    conn = ledger.conn
    # Renewing needs no database lock: a keeper starved by busy writers would let the
    # lease lapse. Only a lost lease is replaced under the lock.
    row = conn.execute("SELECT value FROM fleet_meta WHERE key='lease'").fetchone()
    if row is not None and ledger.client.keepalive(int(row[0])) > 0:
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute(
                "INSERT OR REPLACE INTO fleet_meta VALUES ('renewed', ?)", (str(time.time()),)
            )
    else:
        with write_transaction(conn):
            again = conn.execute("SELECT value FROM fleet_meta WHERE key='lease'").fetchone()
            if again == row:
                ledger._drop_lease()
                ledger._lease()  # rebinds the host's reservations (reported if lapsed)
    ledger.flush()

    # Orphans: keys a process reserved in etcd but died before recording here.
    def names() -> set[str]:
        rows = conn.execute("SELECT level, domain, kind FROM fleet_reservations").fetchall()
        return {_held_name(str(lv), str(d), str(kd)) for lv, d, kd in rows}

    mine = names()
    for k, v, _mod in ledger.client.prefix(f"{ledger.p}held/{ledger.host}/"):
        level = k.decode().rsplit("/", 1)[1]
        if level in mine:
            continue
        key = json.loads(v)["key"]
        cur = ledger.client.get(key)
        if cur is not None and pid_alive(int(cur[0].get("pid", 0))):
            continue  # being recorded right now
        with write_transaction(conn):
            if level in names():
                continue
            cond = [_mod_is(key, cur[1])] if cur is not None else []
            ledger.client.txn(cond, [_delete(key), _delete(k.decode())])


def fleet_status(cfg: Config, conn: sqlite3.Connection) -> dict[str, Any]:
    """What this host holds and how its link to the cluster is (``svirt fleet status``)."""
    settings = FleetSettings.from_config(cfg)
    _ensure_schema(conn)
    status = conn.execute("SELECT value FROM fleet_meta WHERE key='status'").fetchone()
    out: dict[str, Any] = {
        "host": settings.host_id,
        "endpoints": list(settings.endpoints),
        "reservations": [
            {"level": lv, "domain": d, "sticky": bool(s)}
            for lv, d, s in conn.execute(
                "SELECT level, domain, sticky FROM fleet_reservations ORDER BY created"
            )
        ],
        "pending_releases": [
            str(r[0]).split("\0")[0]
            for r in conn.execute(
                "SELECT level, queued FROM fleet_pending UNION ALL "
                "SELECT level, queued FROM fleet_undo ORDER BY queued"
            )
        ],
        "keeper": str(status[0]) if status else "not running",
    }
    client = FleetClient(settings)
    try:
        client.check()
        out["cluster"] = "reachable"
    except FleetUnavailable as exc:
        out["cluster"] = str(exc)
        if out["reservations"]:
            out["warning"] = (
                "this host cannot reach the cluster: its running VMs go on, but its "
                f"reservations lapse {settings.ttl} s after its lease was last renewed"
            )
    return out


def remote_file_uses(
    cfg: Config, paths: Sequence[str]
) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """For doctor/recover: which other hosts recorded each path for a domain they hold
    (path → [(host, domain)]), and why the cluster could not be asked (else None).
    Empty for the sqlite ledger."""
    if cfg.ledger != "etcd" or not paths:
        return {}, None
    settings = FleetSettings.from_config(cfg)
    client = FleetClient(settings)
    out: dict[str, list[tuple[str, str]]] = {}
    try:
        for path in paths:
            real = os.path.realpath(path)
            for k, _v, _m in client.prefix(f"{settings.prefix}file/{real}\0"):
                _p, host, dom = k.decode(errors="replace").rsplit("\0", 2)
                if host != settings.host_id:
                    out.setdefault(path, []).append((host, dom))
    except SecurityError as exc:
        return out, (
            f"could not ask the etcd cluster which hosts hold shared files ({exc}); files "
            "another host uses may be reported as unused"
        )
    return out, None


def level_owners(cfg: Config, levels: Sequence[str]) -> tuple[list[tuple[str, str]], str | None]:
    """For doctor: (level, owner) of this host's fleet reservations and of the given
    levels where another host holds them (owner ``D on host H``), and why the cluster
    could not be asked (else None). Empty for the sqlite ledger."""
    if cfg.ledger != "etcd":
        return [], None
    out: list[tuple[str, str]] = []
    db = cfg.state_dir / "svirt.db"
    if db.exists():
        try:
            conn = sqlite3.connect(readonly_uri(db), uri=True, timeout=5.0)
            try:
                out += [
                    (str(lv), str(d))
                    for lv, d in conn.execute("SELECT level, domain FROM fleet_reservations")
                ]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.debug("cannot read the fleet mirror %s: %s", db, exc)
    settings = FleetSettings.from_config(cfg)
    from svirt.host import selinux as host_selinux
    from svirt.security.selinux import mcs_range

    try:
        daemon = host_selinux.getcon()
    except OSError:
        daemon = cfg.daemon_context
    space = PairSpace(*mcs_range(daemon))
    client = FleetClient(settings)
    try:
        for level in sorted(set(levels)):
            idx = space.index_of(level)
            key = (
                f"{settings.prefix}pair/{idx:0{_WIDTH}d}"
                if idx is not None
                else f"{settings.prefix}level/{level}"
            )
            got = client.get(key)
            if got is not None and got[0].get("host") != settings.host_id:
                out.append((level, f"{got[0].get('domain')} on host {got[0].get('host')}"))
            for _k, v, _m in client.prefix(f"{settings.prefix}level/{level}/"):
                val = json.loads(v)  # the holders of a static label
                if val.get("host") != settings.host_id:
                    out.append((level, f"{val.get('domain')} on host {val.get('host')}"))
    except SecurityError as exc:
        return out, f"could not ask the etcd cluster who holds MCS levels ({exc})"
    return out, None


if __name__ == "__main__":  # the keeper process: python -m svirt.security.fleet keeper JSON
    if len(sys.argv) == 4 and sys.argv[1] == "keeper":
        _settings = FleetSettings.from_json(sys.argv[3])
        logging.basicConfig(
            filename=str(Path(_settings.state_dir) / "fleet-keeper.log"),
            level=logging.WARNING,
            format="%(asctime)s %(levelname)s %(message)s",
        )
        sys.exit(run_keeper(_settings, int(sys.argv[2])))
    sys.exit(2)


def etcd_ledger(cfg: Config) -> EtcdLedger:
    """The etcd ledger of this host's SELinux driver (``svirt migrate-label``, ``svirt
    fleet forget``); ConfigError when the SELinux driver, and so the ledger, is not in use."""
    from svirt.errors import ConfigError
    from svirt.security.manager import SecurityManager

    drv = SecurityManager(cfg).selinux
    if drv is None or not isinstance(drv.ledger, EtcdLedger):
        raise ConfigError("the SELinux driver is not in use: no MCS level", source=cfg.source)
    return drv.ledger
