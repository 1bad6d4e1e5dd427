"""Grouping records into events, the way ausearch groups them.

Records of one event share ``msg=audit(SEC.MS:SERIAL)`` (and ``node=``), but they are
not always adjacent: the kernel writes an AVC during a system call and the SYSCALL,
PATH and PROCTITLE records when it returns, and other events interleave. ausearch
(``ausearch-lol.c``) keeps a list of events being built:

- a record joins the event being built with the same node and time stamp;
- otherwise it starts a new event, and every event being built whose first second is
  2 or more seconds older than the new one's is complete;
- an event whose first record is of a single-record kind (PROCTITLE, types below 1300
  such as USER_* and LOGIN, types from 2100, KERNEL, MAC_UNLBL_ALLOW..MAC_CALIPSO_DEL)
  is complete as soon as it starts: a LOGIN record and the SYSCALL that follows it with
  the same stamp are two events, as ausearch prints them;
- at the end of input every event is complete;
- events come out in time-stamp order (not in the order they complete): the oldest
  event held is printed once it is complete.

:class:`EventGrouper` does exactly that, so svirt and ausearch return the same events.
It also bounds memory: beyond :data:`MAX_OPEN` events being built (a log no kernel
writes), the oldest is completed early and counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from svirt.audit.reader import Record

__all__ = ["MAX_OPEN", "Event", "EventGrouper", "group_records", "is_single_record_type"]

MAX_OPEN = 1 << 16
EVENT_WINDOW = 2  # seconds, auditd.conf's end_of_event_timeout default

_PROCTITLE = 1327
_FIRST_EVENT = 1300
_FIRST_ANOM_MSG = 2100
_KERNEL = 2000
_MAC_UNLBL_ALLOW = 1406
_MAC_CALIPSO_DEL = 1419
_EOE = 1320

T = TypeVar("T")


def is_single_record_type(type_id: int) -> bool:
    """Kinds ausearch treats as complete events on their own (ausearch-lol.c)."""
    return (
        type_id in (_PROCTITLE, _KERNEL)
        or type_id < _FIRST_EVENT
        or type_id >= _FIRST_ANOM_MSG
        or _MAC_UNLBL_ALLOW <= type_id <= _MAC_CALIPSO_DEL
    )


class _Open(Generic[T]):
    __slots__ = ("entry", "items", "sec", "seq")

    def __init__(self, sec: int, seq: int, items: list[T], entry: list[Any]) -> None:
        self.sec = sec
        self.seq = seq
        self.items = items
        self.entry = entry


def _stamp_order(key: bytes) -> tuple[int, int, int]:
    """(sec, milli, serial) of an event key ``[node ]SEC.MS:SERIAL``."""
    stamp = key.rpartition(b" ")[2]
    dot = stamp.find(b".")
    colon = stamp.find(b":", dot + 1)
    try:
        return int(stamp[:dot]), int(stamp[dot + 1 : colon]), int(stamp[colon + 1 :])
    except ValueError:
        return 0, 0, 0


class EventGrouper(Generic[T]):
    """ausearch 3.0.9's event assembly over opaque items (``ausearch-lol.c``): the one
    definition of event completion and order, for both search engines.

    ``add(key, sec, type_id, item)`` returns the events this item lets out (each a list
    of items in arrival order); ``finish()`` returns the rest. ``key`` must identify
    the event (``[node ]SEC.MS:SERIAL``).

    - a record joins the event being built under its key; an EOE record with no such
      event is dropped;
    - a new event takes the first free slot; then every event being built whose first
      second is at least :data:`EVENT_WINDOW` older than the new one is complete, and so
      is an event whose first record is of a single-record kind;
    - ausearch prints the event with the lowest time stamp (seconds, milliseconds,
      serial; the lower slot on a tie) among all events it holds, complete or not, as
      long as that one is complete; its slot is then free.
    """

    def __init__(self, max_open: int = MAX_OPEN, window: int = EVENT_WINDOW) -> None:
        self._open: dict[bytes, _Open[T]] = {}
        # key -> the item list of the event being built; hot loops append to it directly.
        self.building: dict[bytes, list[T]] = {}
        self._heap: list[tuple[int, int, bytes]] = []
        # every event held: (sec, milli, serial, slot, seq, [complete?, items, slot])
        self._held: list[tuple[int, int, int, int, int, list[Any]]] = []
        self._free: list[int] = []
        self._next_slot = 0
        self._seq = 0
        self._max_open = max_open
        self._window = window
        self.forced = 0

    def add(self, key: bytes, sec: int, type_id: int, item: T) -> list[list[T]]:
        items = self.building.get(key)
        if items is not None:
            items.append(item)
            return []
        return self.start(key, sec, type_id, item)

    def append(self, key: bytes, item: T) -> bool:
        """Add ``item`` to the event being built under ``key``; False if there is none."""
        items = self.building.get(key)
        if items is None:
            return False
        items.append(item)
        return True

    def start(self, key: bytes, sec: int, type_id: int, item: T) -> list[list[T]]:
        """Start a new event (the caller knows none is being built under ``key``)."""
        if type_id == _EOE:
            return []
        self._seq += 1
        seq = self._seq
        if self._free:
            slot = heapq.heappop(self._free)
        else:
            slot = self._next_slot
            self._next_slot += 1
        heap = self._heap
        limit = sec - self._window
        while heap and heap[0][0] <= limit:
            _, old_seq, k = heapq.heappop(heap)
            ev = self._open.get(k)
            if ev is not None and ev.seq == old_seq:
                del self._open[k]
                del self.building[k]
                ev.entry[0] = True
        items = [item]
        entry: list[Any] = [False, items, slot]
        if is_single_record_type(type_id):
            entry[0] = True
        else:
            if len(self._open) >= self._max_open:
                old_key = next(iter(self._open))
                old = self._open.pop(old_key)
                del self.building[old_key]
                old.entry[0] = True
                self.forced += 1
            self._open[key] = _Open(sec, seq, items, entry)
            self.building[key] = items
            heapq.heappush(heap, (sec, seq, key))
        s, ms, serial = _stamp_order(key)
        held = self._held
        heapq.heappush(held, (s, ms, serial, slot, seq, entry))
        if not held[0][5][0]:
            return []
        out: list[list[T]] = []
        free = self._free
        while held and held[0][5][0]:
            done = heapq.heappop(held)[5]
            heapq.heappush(free, done[2])
            out.append(done[1])
        return out

    def finish(self) -> list[list[T]]:
        held = self._held
        rest = [heapq.heappop(held)[5][1] for _ in range(len(held))]
        self._open.clear()
        self.building.clear()
        self._heap.clear()
        self._free.clear()
        self._next_slot = 0
        return rest

    @property
    def open_count(self) -> int:
        return len(self._open)


@dataclass(frozen=True, slots=True)
class Event:
    """An audit event: its records in the order they were logged."""

    records: tuple[Record, ...]

    @property
    def first(self) -> Record:
        return self.records[0]

    @property
    def sec(self) -> int:
        return self.records[0].sec

    @property
    def milli(self) -> int:
        return self.records[0].milli

    @property
    def serial(self) -> int:
        return self.records[0].serial

    @property
    def node(self) -> str | None:
        return self.records[0].node

    @property
    def time(self) -> float:
        return self.records[0].time

    def of_type(self, name: str) -> list[Record]:
        return [r for r in self.records if r.type == name]

    def find(self, name: str) -> Record | None:
        for r in self.records:
            if r.type == name:
                return r
        return None

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(r.type for r in self.records)


def record_key(rec: Record) -> bytes:
    stamp = f"{rec.sec}.{rec.milli:03d}:{rec.serial}".encode()
    return stamp if rec.node is None else rec.node.encode() + b" " + stamp


def group_records(records: Iterable[Record], max_open: int = MAX_OPEN) -> Iterator[Event]:
    """Events from records, completed as ausearch completes them."""
    grouper: EventGrouper[Record] = EventGrouper(max_open)
    for rec in records:
        for items in grouper.add(record_key(rec), rec.sec, rec.type_id, rec):
            yield Event(tuple(items))
    for items in grouper.finish():
        yield Event(tuple(items))
