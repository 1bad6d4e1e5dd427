"""Grouping records into events, the way ausearch groups them.

Records of one event share ``msg=audit(SEC.MS:SERIAL)`` (and ``node=``), but they are
not always adjacent: the kernel writes an AVC during a system call and the SYSCALL,
PATH and PROCTITLE records when it returns, and other events interleave. ausearch
(``ausearch-lol.c``) keeps a list of events being built:

- a record joins the event being built with the same node and time stamp;
- otherwise it starts a new event, and every event being built whose time is more
  than 2 seconds older than the new one is complete;
- an event whose first record is of a single-record kind (PROCTITLE, types below 1300
  such as USER_* and LOGIN, types from 2100, KERNEL, MAC_UNLBL_ALLOW..MAC_CALIPSO_DEL)
  is complete as soon as it starts: a LOGIN record and the SYSCALL that follows it with
  the same stamp are two events, as ausearch prints them;
- at the end of input every event is complete.

:class:`EventGrouper` does exactly that, so svirt and ausearch return the same events.
It also bounds memory: beyond :data:`MAX_OPEN` events being built (a log no kernel
writes), the oldest is completed early and counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

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
    __slots__ = ("items", "sec", "seq")

    def __init__(self, sec: int, seq: int, items: list[T]) -> None:
        self.sec = sec
        self.seq = seq
        self.items = items


class EventGrouper(Generic[T]):
    """ausearch's event assembly over opaque items.

    ``add(key, sec, type_id, item)`` returns the events completed by this item (each a
    list of items in arrival order); ``finish()`` returns the rest. ``key`` must
    identify the event (node and time stamp).
    """

    def __init__(self, max_open: int = MAX_OPEN, window: int = EVENT_WINDOW) -> None:
        self._open: dict[bytes, _Open[T]] = {}
        # key -> the item list of the event being built; hot loops append to it directly.
        self.building: dict[bytes, list[T]] = {}
        self._heap: list[tuple[int, int, bytes]] = []
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
        self._seq += 1
        done: list[tuple[int, list[T]]] = []
        heap = self._heap
        limit = sec - self._window
        while heap and heap[0][0] < limit:
            _, seq, k = heapq.heappop(heap)
            ev = self._open.get(k)
            if ev is not None and ev.seq == seq:
                del self._open[k]
                del self.building[k]
                done.append((seq, ev.items))
        if is_single_record_type(type_id):
            done.append((self._seq, [item]))
        else:
            if len(self._open) >= self._max_open:
                old_key = next(iter(self._open))
                old = self._open.pop(old_key)
                del self.building[old_key]
                done.append((old.seq, old.items))
                self.forced += 1
            items = [item]
            self._open[key] = _Open(sec, self._seq, items)
            self.building[key] = items
            heapq.heappush(heap, (sec, self._seq, key))
        if len(done) > 1:
            done.sort(key=lambda d: d[0])
        return [items for _, items in done]

    def finish(self) -> list[list[T]]:
        rest = [ev.items for ev in self._open.values()]
        self._open.clear()
        self.building.clear()
        self._heap.clear()
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
