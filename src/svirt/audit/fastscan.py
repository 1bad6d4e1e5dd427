"""The fast search engine: find the anchoring records first, assemble only their events.

``ausearch`` reads every line, groups all of them into events and then tests each event.
When the criteria name a message type (``-m AVC``) or a serial (``-a``), every matching
event contains a record that can be found with a plain substring search
(``type=AVC msg=audit(``), which runs at memory speed. For each such record this engine
looks for the other records of its event (same ``msg=audit(STAMP)`` and node) within
:data:`WINDOW` bytes on each side, splits them into events the way ausearch does
(single-record kinds, a record 2 or more seconds newer in between), and runs the same
:class:`~svirt.audit.matching.Matcher` on the result. Lines far from any anchor are
never split into Python objects. Assembling one event costs about what reading 3 KiB line
by line costs, so ``search(engine="auto")`` uses this engine only when the anchoring
records are sparser than that (:func:`prefer_fast`).

It returns the events :func:`~svirt.audit.search.scan_exact` returns on logs written
by auditd, where the records of an event are written together. It can differ where the
records of one event are more than :data:`WINDOW` bytes apart yet less than 2 seconds
apart in time (ausearch would still join them), or where the log's clock goes back by
more than 2 seconds between the records of one event. Standard input and logs in other
formats (pasted ``ausearch -i`` output, syslog lines) go to the exact engine.
Malformed lines (lines that do not begin with ``type=`` or ``node=``) are found with one
regular-expression pass and reported with their byte offset; the fast engine does not
number lines.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from svirt.audit.events import Event, is_single_record_type
from svirt.audit.matching import Matcher
from svirt.audit.reader import (
    _BYTES_NAME_TO_ID,
    _RAW_STAMP,
    LogInput,
    ReadStats,
    Record,
    looks_standard,
    msg_type_id,
    msg_type_name,
    parse_record,
)
from svirt.audit.search import SearchCriteria, scan_exact

__all__ = ["PARALLEL_MIN", "READ_SIZE", "WINDOW", "parallel_jobs", "prefer_fast", "scan_fast"]

WINDOW = 32 * 1024
READ_SIZE = 8 << 20
_SAMPLE = 4 << 20
# One anchoring record per this many bytes is where the two engines cost the same.
_DENSE_BYTES = 3 * 1024
_HEADER = b"msg=audit("
_SEC = re.compile(rb"msg=audit\((\d+)\.")
_BAD_LINE = re.compile(rb"\n(?!type=|node=|\n)")  # a blank line is a separator (issue 11)


@dataclass(slots=True)
class _File:
    path: str
    start: int  # global offset of the file's first byte
    end: int = -1  # global offset after its last byte (-1 while reading)


class _Stream:
    """The inputs as one byte stream (a newline added where a file lacks a final one)."""

    def __init__(self, inputs: Sequence[LogInput], stats: ReadStats) -> None:
        self._inputs = list(inputs)
        self._stats = stats
        self._idx = -1
        self._fh: BinaryIO | None = None
        self._pos = 0
        self._last = b"\n"
        self.files: list[_File] = []

    def read(self, size: int) -> bytes:
        while True:
            if self._fh is None:
                self._idx += 1
                if self._idx >= len(self._inputs):
                    return b""
                inp = self._inputs[self._idx]
                self._stats.files.append(inp.path)
                self._fh = inp.open()
                self.files.append(_File(inp.path, self._pos))
            try:
                data: bytes = self._fh.read(size)
            except (OSError, EOFError) as exc:
                self._stats.note_malformed(self.files[-1].path, 0, f"read error: {exc}")
                data = b""
            if data:
                self._pos += len(data)
                self._last = data[-1:]
                return data
            self._fh.close()
            self._fh = None
            tail = b""
            if self._last != b"\n":
                tail = b"\n"
                self._pos += 1
                self._last = b"\n"
            self.files[-1].end = self._pos
            if tail:
                return tail

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _head(inp: LogInput, size: int) -> bytes:
    fh = inp.open()
    try:
        return fh.read(size)
    finally:
        fh.close()


_looks_standard = looks_standard


def _anchors(criteria: SearchCriteria) -> list[bytes]:
    if criteria.event_id is not None:
        return [b":%d)" % criteria.event_id]
    assert criteria.types is not None
    return [b"type=" + msg_type_name(t).encode() + b" " + _HEADER for t in sorted(criteria.types)]


def prefer_fast(inputs: Sequence[LogInput], criteria: SearchCriteria) -> bool:
    """Should ``search(engine="auto")`` use this engine? Yes when the criteria are
    anchored, the inputs are plain auditd files, and the anchoring records are sparse
    (measured on the first megabytes): assembling an event around each costs about as
    much as reading 3 KiB line by line, so for dense anchors (``-m SYSCALL``) the exact
    engine is faster."""
    if not criteria.anchored or not inputs or any(i.is_stdin for i in inputs):
        return False
    if not all(_looks_standard(i) for i in inputs):
        return False
    sample = _head(inputs[-1], _SAMPLE)
    if not sample:
        return True
    hits = sum(sample.count(a) for a in _anchors(criteria))
    return hits * _DENSE_BYTES <= len(sample)


class _RangeStream:
    """Bytes ``[start, end)`` of one file (the caller aligns both to line starts)."""

    def __init__(self, path: str, start: int, end: int) -> None:
        self.files = [_File(path, 0)]
        self._fh: BinaryIO | None = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._fh.seek(start)
        self._left = end - start

    def read(self, size: int) -> bytes:
        if self._fh is None or self._left <= 0:
            return b""
        data = self._fh.read(min(size, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _Scanner:
    """``own``: report only events whose first line, and check only lines, starting in
    these global offsets (a worker's share of a file); the stream then starts at
    ``base``."""

    def __init__(
        self,
        inputs: Sequence[LogInput],
        criteria: SearchCriteria,
        stats: ReadStats,
        *,
        stream: _Stream | _RangeStream | None = None,
        base: int = 0,
        own: tuple[int, int] | None = None,
    ) -> None:
        self.criteria = criteria
        self.stats = stats
        self.matcher = Matcher(criteria)
        self.stream = stream if stream is not None else _Stream(inputs, stats)
        self.anchors = _anchors(criteria)
        self.by_serial = criteria.event_id is not None
        self.buf = b""
        self.base = base  # global offset of buf[0]
        self.own = own
        self.reported: dict[int, None] = {}

    # -- lines ----------------------------------------------------------------------------
    def _header(self, start: int) -> tuple[int, bytes, bytes | None, bytes] | None:
        """(end, type, node, stamp) of the record line starting at buf[start]."""
        buf = self.buf
        end = buf.find(b"\n", start)
        if end < 0:
            end = len(buf)
        pos = start
        node: bytes | None = None
        if buf.startswith(b"node=", start):
            sp = buf.find(b" ", start, end)
            if sp < 0:
                return None
            node = buf[start + 5 : sp]
            pos = sp + 1
        if not buf.startswith(b"type=", pos):
            return None
        sp = buf.find(b" ", pos, end)
        if sp < 0 or not buf.startswith(_HEADER, sp + 1):
            return None
        close = buf.find(b")", sp + 11, end)
        if close < 0:
            return None
        return end, buf[pos + 5 : sp], node, buf[sp + 11 : close]

    def _record_at(self, j: int, node: bytes | None) -> tuple[int, int, bytes] | None:
        """(start, end, type) of the record whose ``msg=audit(`` header is at buf[j], if
        that line is a record of ``node``; None when the text is inside another line."""
        buf = self.buf
        ls = buf.rfind(b"\n", 0, j) + 1
        pos = ls
        if node is not None:
            if not buf.startswith(b"node=" + node + b" ", ls):
                return None
            pos = ls + len(node) + 6
        elif not buf.startswith(b"type=", ls):
            return None
        if not buf.startswith(b"type=", pos) or buf.find(b" ", pos, j) != j - 1:
            return None
        le = buf.find(b"\n", j)
        return ls, (len(buf) if le < 0 else le), buf[pos + 5 : j - 1]

    def _completes(self, lo: int, hi: int, limit: int) -> bool:
        """Is there a record in buf[lo:hi] of ``limit`` seconds or newer that ausearch
        keeps (inside the time range)? Such a record completes the events being built."""
        c = self.criteria
        for m in _SEC.finditer(self.buf, lo, hi):
            sec = int(m.group(1))
            in_range = (c.start is None or sec >= c.start) and (c.end is None or sec <= c.end)
            if sec >= limit and in_range:
                return True
        return False

    # -- one anchoring record -------------------------------------------------------------
    def _event_of(self, start: int) -> tuple[int, int, int, list[tuple[int, int]]] | None:
        """(sec, serial, global offset of the first line, [(start, end) of each line]) of
        the event containing the record line at buf[start], or None to skip it."""
        head = self._header(start)
        if head is None:
            return None
        end, _type, node, stamp = head
        m = _RAW_STAMP.match(stamp)
        if m is None:
            return None
        sec, serial = int(m.group(1)), int(m.group(3))
        c = self.criteria
        if (c.start is not None and sec < c.start) or (c.end is not None and sec > c.end):
            return None
        if c.event_id is not None and serial != c.event_id:
            return None
        buf = self.buf
        pat = _HEADER + stamp + b")"
        lo = max(0, start - WINDOW)
        hi = min(len(buf), end + WINDOW)
        # (start, end, type) of every record of this stamp and node within the window
        found: list[tuple[int, int, bytes]] = []
        j = start
        while True:
            j = buf.rfind(pat, lo, j)
            if j < 0:
                break
            hit = self._record_at(j, node)
            if hit is not None:
                found.append(hit)
            j = buf.rfind(b"\n", 0, j) + 1
        found.reverse()
        found.append((start, end, _type))
        j = end
        while True:
            j = buf.find(pat, j, hi)
            if j < 0:
                break
            hit = self._record_at(j, node)
            if hit is not None:
                found.append(hit)
                j = hit[1]
            else:
                j += len(pat)
        # Split as ausearch would: a single-record kind stands alone; a record more than
        # 2 or more seconds newer between two of these lines completes the event being built.
        groups: list[list[tuple[int, int]]] = []
        building: list[tuple[int, int]] | None = None
        prev_end = -1
        for ls, le, tname in found:
            if (
                building is not None
                and ls > prev_end + 1
                and self._completes(prev_end, ls, sec + 2)
            ):
                groups.append(building)
                building = None
            if building is None:
                tid = _BYTES_NAME_TO_ID.get(tname)
                if tid is None:
                    tid = msg_type_id(tname.decode("ascii", "replace"))
                if is_single_record_type(tid):
                    groups.append([(ls, le)])
                else:
                    building = [(ls, le)]
            else:
                building.append((ls, le))
            prev_end = le
        if building is not None:
            groups.append(building)
        for group in groups:
            for ls, _le in group:
                if ls == start:
                    return sec, serial, self.base + group[0][0], group
        return None

    def _candidates(self, lo: int, hi: int) -> list[int]:
        """Line starts in buf[lo:hi] of records carrying an anchor."""
        buf = self.buf
        found: set[int] = set()
        for anchor in self.anchors:
            j = buf.find(anchor, lo, hi)
            while j >= 0:
                if self.by_serial:
                    ls = buf.rfind(b"\n", 0, j) + 1
                    h = self._header(ls)
                    if h is not None and h[3].endswith(anchor[:-1]) and ls >= lo:
                        found.add(ls)
                    j = buf.find(anchor, j + 1, hi)
                    continue
                if j == 0 or buf[j - 1] == 10:
                    found.add(j)
                elif buf[j - 1] == 32:
                    ls = buf.rfind(b"\n", 0, j) + 1
                    if buf.startswith(b"node=", ls) and buf.find(b" ", ls, j) == j - 1 and ls >= lo:
                        found.add(ls)
                j = buf.find(anchor, j + len(anchor), hi)
        return sorted(found)

    # -- bookkeeping ----------------------------------------------------------------------
    def _where(self, pos: int) -> tuple[str, int]:
        """(file, byte offset in it) of buf position ``pos``."""
        gpos = self.base + pos
        files = self.stream.files
        i = len(files) - 1
        while i > 0 and files[i].start > gpos:
            i -= 1
        return files[i].path, gpos - files[i].start

    def _check_lines(self, lo: int, hi: int) -> None:
        """Report the lines of buf[lo:hi] (lo at a line start) that are not records, with
        one regular-expression pass (no per-line Python work when there are none)."""
        if hi <= lo:
            return
        buf = self.buf
        self.stats.bytes += hi - lo
        starts: list[int] = []
        if lo < hi and not buf.startswith((b"type=", b"node="), lo):
            starts.append(lo)
        starts.extend(m.start() + 1 for m in _BAD_LINE.finditer(buf, lo, max(lo, hi - 1)))
        for pos in starts:
            end = buf.find(b"\n", pos, hi)
            line = buf[pos : hi if end < 0 else end]
            if not line.strip() or line.lstrip().startswith((b"----", b"time->")):
                continue
            path, offset = self._where(pos)
            rec = parse_record(line)
            reason = rec if isinstance(rec, str) else "not a plain auditd record"
            self.stats.note_malformed(path, 0, f"{reason} (byte {offset})")

    def _build(self, group: list[tuple[int, int]]) -> Event:
        records: list[Record] = []
        for ls, le in group:
            path, offset = self._where(ls)
            rec = parse_record(self.buf[ls:le], path, 0, offset)
            if isinstance(rec, Record):
                records.append(rec)
        return Event(tuple(records))

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> Iterator[Event]:
        stats = self.stats
        cur = 0  # buf offset: candidates before it were handled
        eof = False
        try:
            while not eof:
                data = self.stream.read(READ_SIZE)
                if not data:
                    eof = True
                # Drop what no future window can reach: keep WINDOW bytes before cur.
                drop = cur - WINDOW
                if drop > 0:
                    self.buf = self.buf[drop:]
                    self.base += drop
                    cur -= drop
                if data:
                    self.buf += data
                buf = self.buf
                if eof:
                    limit = len(buf)
                else:
                    complete = buf.rfind(b"\n") + 1
                    limit = buf.rfind(b"\n", 0, max(0, complete - WINDOW)) + 1
                    if limit <= cur:
                        continue
                match = self.matcher.match_lines
                for start in self._candidates(cur, limit):
                    found = self._event_of(start)
                    if found is None:
                        continue
                    sec, serial, first, group = found
                    if first in self.reported:
                        continue
                    self.reported[first] = None
                    if self.own is not None and not self.own[0] <= first < self.own[1]:
                        continue
                    stats.events += 1
                    if match(sec, serial, [buf[a:b] for a, b in group]):
                        yield self._build(group)
                if self.own is None:
                    self._check_lines(cur, limit)
                else:
                    lo = max(cur, self.own[0] - self.base)
                    hi = min(limit, self.own[1] - self.base)
                    self._check_lines(lo, hi)
                cur = limit
                if len(self.reported) > 4096:
                    floor = self.base + cur - 2 * WINDOW
                    self.reported = {k: None for k in self.reported if k >= floor}
        finally:
            self.stream.close()


# --- several processes on one large file ------------------------------------------------

PARALLEL_MIN = 64 << 20
SHARE = 32 << 20


@dataclass(slots=True)
class _Share:
    """What a worker found in its share: matched events as (offset, line) pairs."""

    events: list[list[tuple[int, bytes]]]
    assembled: int
    malformed: int
    examples: list[str]
    bytes: int


def _line_start_after(fh: BinaryIO, pos: int) -> int:
    """The first line start at or after ``pos``."""
    if pos <= 0:
        return 0
    fh.seek(pos - 1)
    while True:
        chunk = fh.read(1 << 16)
        if not chunk:
            return fh.tell()
        nl = chunk.find(b"\n")
        if nl >= 0:
            return pos - 1 + nl + 1
        pos += len(chunk)


def _scan_share(job: tuple[str, SearchCriteria, int, int, int]) -> _Share:
    """Worker: events whose first line starts in [lo, hi) of the file."""
    path, criteria, lo, hi, size = job
    with open(path, "rb") as fh:
        start = _line_start_after(fh, lo - 2 * WINDOW) if lo else 0
        end = _line_start_after(fh, hi + 2 * WINDOW) if hi < size else size
    stats = ReadStats()
    scanner = _Scanner(
        [], criteria, stats, stream=_RangeStream(path, start, end), base=start, own=(lo, hi)
    )
    events = [
        [
            (r.offset, r.line if r.interp is None else r.line + b"\x1d" + r.interp)
            for r in ev.records
        ]
        for ev in scanner.run()
    ]
    return _Share(events, stats.events, stats.malformed, stats.malformed_examples, stats.bytes)


def parallel_jobs(inputs: Sequence[LogInput]) -> int:
    """How many processes to scan with: one per CPU (at most 4) for a single plain file
    of at least :data:`PARALLEL_MIN` bytes, else 1."""
    if len(inputs) != 1 or inputs[0].is_stdin:
        return 1
    path = inputs[0].path
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
    except OSError:
        return 1
    if not stat.S_ISREG(st.st_mode) or gzipped or st.st_size < PARALLEL_MIN:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _scan_parallel(
    path: str, criteria: SearchCriteria, stats: ReadStats, jobs: int
) -> Iterator[Event]:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        cuts = sorted({_line_start_after(fh, pos) for pos in range(0, size, SHARE)} | {size})
    shares = [(path, criteria, lo, hi, size) for lo, hi in itertools.pairwise(cuts)]
    stats.files.append(path)
    # spawn, not fork: the caller may have threads; the workers import svirt afresh.
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for share in pool.imap(_scan_share, shares):
            stats.events += share.assembled
            stats.bytes += share.bytes
            stats.malformed += share.malformed
            room = 5 - len(stats.malformed_examples)
            stats.malformed_examples.extend(share.examples[: max(0, room)])
            for pairs in share.events:
                records = [parse_record(line, path, 0, offset) for offset, line in pairs]
                yield Event(tuple(r for r in records if isinstance(r, Record)))


def scan_fast(
    inputs: Sequence[LogInput],
    criteria: SearchCriteria,
    stats: ReadStats | None = None,
    *,
    jobs: int = 1,
) -> Iterator[Event]:
    """Matching events, found from their anchoring records (see the module docstring).

    Falls back to :func:`scan_exact` for unanchored criteria, standard input, and logs
    that are not plain auditd records.
    """
    stats = stats if stats is not None else ReadStats()
    if not criteria.anchored or any(inp.is_stdin for inp in inputs):
        return scan_exact(inputs, criteria, stats)
    if not all(_looks_standard(inp) for inp in inputs):
        return scan_exact(inputs, criteria, stats)
    if jobs > 1 and parallel_jobs(inputs) > 1:
        return _scan_parallel(inputs[0].path, criteria, stats, jobs)
    return _Scanner(inputs, criteria, stats).run()
