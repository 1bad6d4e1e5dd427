"""The compiled search core (``_scan.c``, built by ``scripts/setup.sh`` into ``_scan.so``).

Plain Python cannot read a log as fast as ausearch (measured: 4 to 12 times slower on one
CPU for dense queries, see README), so the per-line and per-event work is done in C over
the mapped files: finding each record's header; assembling events with ausearch's rules
and order (:class:`svirt.audit.events.EventGrouper` is the definition); matching them
with ausearch's rules (a line-for-line port of :class:`svirt.audit.matching.Matcher`, the
definition); and writing ``--raw`` or default output. For ``-i``, ``--json`` and
``explain`` the matching events come back to Python as :class:`Event` objects (records
parsed once, for matching events only). The tests run every filter through both and
compare with ausearch byte for byte.

Used for plain (not compressed) regular files whose lines are auditd's own records
(:func:`usable`); standard input, gzip and pasted ``ausearch`` output go to the Python
engines. A ``-ts`` window is found by bisection and reading stops a minute after ``-te``:
this assumes a log's time stamps grow (a clock stepped back by more than a minute inside
one file would hide records from a time-window search).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from svirt.audit._tables import MSG_TYPES
from svirt.audit.events import Event
from svirt.audit.reader import _TOO_LONG, LogInput, ReadStats, Record, looks_standard, parse_record
from svirt.audit.search import SearchCriteria

__all__ = [
    "LIBRARY",
    "available",
    "interprets",
    "scan_events",
    "usable",
    "write_decided",
]

LIBRARY = Path(__file__).with_name("_scan.so")
CHUNK = 8 << 20
_MAX_EXAMPLES = 5


class _Opts(ctypes.Structure):
    _fields_ = (
        ("types", ctypes.POINTER(ctypes.c_int)),
        ("ntypes", ctypes.c_int),
        ("has_start", ctypes.c_int),
        ("has_end", ctypes.c_int),
        ("has_serial", ctypes.c_int),
        ("start", ctypes.c_longlong),
        ("end", ctypes.c_longlong),
        ("serial", ctypes.c_ulong),
        ("needles", ctypes.POINTER(ctypes.c_char_p)),
        ("fields", ctypes.POINTER(ctypes.c_char_p)),
        ("nneedles", ctypes.c_int),
        ("has_pid", ctypes.c_int),
        ("pid", ctypes.c_ulonglong),
        ("comm", ctypes.c_char_p),
        ("exe", ctypes.c_char_p),
        ("key", ctypes.c_char_p),
        ("has_success", ctypes.c_int),
        ("success", ctypes.c_int),
        ("whole_word", ctypes.c_int),
        ("decided", ctypes.c_int),
        ("format", ctypes.c_int),
        ("out_fd", ctypes.c_int),
        ("type_names", ctypes.POINTER(ctypes.c_char_p)),
        ("type_ids", ctypes.POINTER(ctypes.c_int)),
        ("ntypenames", ctypes.c_int),
        ("ev_uid", ctypes.c_uint),
        ("ev_euid", ctypes.c_uint),
        ("ev_auid", ctypes.c_uint),
        ("ev_gid", ctypes.c_uint),
        ("ev_egid", ctypes.c_uint),
        ("uid_all", ctypes.c_int),
        ("gid_all", ctypes.c_int),
        ("uid_name", ctypes.c_char_p),
        ("euid_name", ctypes.c_char_p),
        ("auid_name", ctypes.c_char_p),
        ("has_syscall", ctypes.c_int),
        ("syscall", ctypes.c_longlong),
        ("syscall_arch", ctypes.c_ulonglong),
        ("has_exit", ctypes.c_int),
        ("exit", ctypes.c_longlong),
    )


class _Stats(ctypes.Structure):
    _fields_ = (
        ("lines", ctypes.c_longlong),
        ("events", ctypes.c_longlong),
        ("matched", ctypes.c_longlong),
        ("malformed", ctypes.c_longlong),
        ("skipped", ctypes.c_longlong),
        ("nexamples", ctypes.c_int),
        ("example_file", ctypes.c_int * _MAX_EXAMPLES),
        ("example_line", ctypes.c_longlong * _MAX_EXAMPLES),
        ("example_off", ctypes.c_longlong * _MAX_EXAMPLES),
        ("example_reason", ctypes.c_int * _MAX_EXAMPLES),
        ("stopped", ctypes.c_int),
        ("write_error", ctypes.c_int),
    )


_lib: Any = None
_tried = False
_NAMES = [name.encode() for name in MSG_TYPES.values()]
_IDS = list(MSG_TYPES)


def available() -> bool:
    """Is the compiled core built and loadable? (``SVIRT_NO_NATIVE=1`` turns it off.)"""
    global _lib, _tried
    if os.environ.get("SVIRT_NO_NATIVE"):
        return False
    if not _tried:
        _tried = True
        try:
            lib = ctypes.CDLL(str(LIBRARY))
        except OSError:
            return False
        lib.svs_new.argtypes = [ctypes.POINTER(_Opts)]
        lib.svs_new.restype = ctypes.c_void_p
        lib.svs_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.svs_open.restype = ctypes.c_int
        lib.svs_run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong]
        lib.svs_run.restype = ctypes.c_int
        lib.svs_finish.argtypes = [ctypes.c_void_p]
        lib.svs_finish.restype = None
        lib.svs_stats.argtypes = [ctypes.c_void_p]
        lib.svs_stats.restype = ctypes.POINTER(_Stats)
        lib.svs_free.argtypes = [ctypes.c_void_p]
        lib.svs_free.restype = None
        pp = ctypes.POINTER(ctypes.c_void_p)
        lib.svs_batch.argtypes = [ctypes.c_void_p, pp, pp]
        lib.svs_batch.restype = ctypes.c_longlong
        lib.svs_clear_batch.argtypes = [ctypes.c_void_p]
        lib.svs_clear_batch.restype = None
        lib.svs_interpret_available.argtypes = []
        lib.svs_interpret_available.restype = ctypes.c_int
        _lib = lib
    return _lib is not None


def interprets() -> bool:
    """Can the core write ``-i`` output (libauparse and libaudit found)?"""
    return available() and bool(_lib.svs_interpret_available())


def usable(inputs: Sequence[LogInput]) -> bool:
    """The compiled core can read these inputs: plain regular files of auditd records."""
    if not inputs or not available():
        return False
    for inp in inputs:
        if inp.is_stdin:
            return False
        try:
            with open(inp.path, "rb") as fh:
                if not os.path.isfile(inp.path) or fh.read(2) == b"\x1f\x8b":
                    return False
        except OSError:
            return False
        if not looks_standard(inp):
            return False
    return True


def decided(criteria: SearchCriteria) -> bool:
    """Only record types, a serial and a time range: the core matches on its own."""
    c = criteria
    return (
        c.comm is None
        and c.exe is None
        and c.key is None
        and c.pid is None
        and (c.success is None)
        and c.syscall is None
        and c.exit is None
    ) and not _wants_ids(c)


def _wants_ids(c: SearchCriteria) -> bool:
    ids = (c.uid, c.euid, c.loginuid, c.gid, c.egid, c.uid_name, c.euid_name, c.loginuid_name)
    return any(v is not None for v in ids)


def _cstrings(items: Sequence[bytes]) -> Any:
    arr = (ctypes.c_char_p * max(1, len(items)))()
    for i, item in enumerate(items):
        arr[i] = item
    return arr


class _Run:
    """One scan: options, files, the C handle and the results."""

    def __init__(self, inputs: Sequence[LogInput], criteria: SearchCriteria, stats: ReadStats):
        if not available():
            from svirt.errors import AuditError

            raise AuditError(f"the compiled search core is not built ({LIBRARY})")
        self.inputs = list(inputs)
        self.criteria = criteria
        self.stats = stats
        self.keep: list[Any] = []
        self.opened: list[str] = []
        self.opts = _Opts()
        o = self.opts
        c = criteria
        types = sorted(c.types) if c.types else []
        arr = (ctypes.c_int * max(1, len(types)))(*types)
        self.keep.append(arr)
        o.types, o.ntypes = arr, len(types)
        o.has_start, o.start = int(c.start is not None), c.start or 0
        o.has_end, o.end = int(c.end is not None), c.end or 0
        o.has_serial, o.serial = int(c.event_id is not None), c.event_id or 0
        wanted = ((c.comm, b"comm="), (c.exe, b"exe="), (c.key, b"key="))
        needles = [(text.encode(), name) for text, name in wanted if text]
        n = _cstrings([x for x, _ in needles])
        f = _cstrings([y for _, y in needles])
        self.keep += [n, f]
        o.needles, o.fields, o.nneedles = n, f, len(needles)
        o.has_pid, o.pid = int(c.pid is not None), c.pid or 0
        o.comm = c.comm.encode() if c.comm is not None else None
        o.exe = c.exe.encode() if c.exe is not None else None
        o.key = c.key.encode() if c.key is not None else None
        o.has_success, o.success = int(c.success is not None), int(bool(c.success))
        unset, auid_unset = 0xFFFFFFFF, 0xFFFFFFFE
        o.ev_uid = unset if c.uid is None else c.uid & unset
        o.ev_euid = unset if c.euid is None else c.euid & unset
        o.ev_auid = auid_unset if c.loginuid is None else c.loginuid & unset
        o.ev_gid = unset if c.gid is None else c.gid & unset
        o.ev_egid = unset if c.egid is None else c.egid & unset
        o.uid_all, o.gid_all = int(c.uid_all), int(c.gid_all)
        o.uid_name = c.uid_name.encode() if c.uid_name is not None else None
        o.euid_name = c.euid_name.encode() if c.euid_name is not None else None
        o.auid_name = c.loginuid_name.encode() if c.loginuid_name is not None else None
        o.has_syscall, o.syscall = int(c.syscall is not None), c.syscall or 0
        o.syscall_arch = c.syscall_arch
        o.has_exit, o.exit = int(c.exit is not None), c.exit or 0
        o.whole_word = int(c.whole_word)
        names = _cstrings(_NAMES)
        ids = (ctypes.c_int * len(_IDS))(*_IDS)
        self.keep += [names, ids]
        o.type_names, o.type_ids, o.ntypenames = names, ids, len(_IDS)

    def run(self, handle: Any) -> Iterator[None]:
        """Read every input through the core, pausing after each chunk (the caller takes
        the batch); statistics are added to ``stats`` and the handle freed at the end."""
        lib = _lib
        stats = self.stats
        try:
            for inp in self.inputs:
                idx = lib.svs_open(handle, inp.path.encode())
                if idx < 0:
                    from svirt.errors import AuditError

                    raise AuditError(f"cannot read audit log: {os.strerror(-idx)}", source=inp.path)
                stats.files.append(inp.path)
                self.opened.append(inp.path)
                while lib.svs_run(handle, idx, CHUNK):
                    yield
                yield
            lib.svs_finish(handle)
            yield
        finally:
            st = lib.svs_stats(handle).contents
            stats.lines += st.lines
            stats.records += st.lines - st.malformed
            stats.events += st.events
            stats.bytes += st.skipped
            for i in range(st.nexamples):
                path = self.inputs[st.example_file[i]].path
                stats.note_malformed(
                    path,
                    *self._example(
                        path, st.example_line[i], st.example_off[i], st.example_reason[i]
                    ),
                )
            stats.malformed += st.malformed - st.nexamples
            self.matched = st.matched
            self.write_error = st.write_error
            lib.svs_free(handle)

    @staticmethod
    def _example(path: str, lineno: int, offset: int, reason: int) -> tuple[int, str]:
        """(line number, reason) of a skipped line, found again in the file."""
        try:
            with open(path, "rb") as fh:
                if lineno < 0:
                    lineno = 1
                    left = offset
                    while left > 0:
                        block = fh.read(min(left, 1 << 20))
                        if not block:
                            break
                        lineno += block.count(b"\n")
                        left -= len(block)
                fh.seek(offset)
                line = fh.readline(1 << 20).rstrip(b"\n")
        except OSError:
            return max(lineno, 0), "unreadable"
        if reason == 1:
            return lineno, _TOO_LONG
        rec = parse_record(line)
        return lineno, rec if isinstance(rec, str) else "not a plain auditd record"


def write_decided(
    inputs: Sequence[LogInput], criteria: SearchCriteria, stats: ReadStats, fmt: str, fd: int
) -> int:
    """Search and write ``--raw`` (``fmt="raw"``), default or ``-i`` (``"interpret"``,
    when :func:`interprets`) output to ``fd`` from the core; the number of events
    written."""
    run = _Run(inputs, criteria, stats)
    if fmt == "interpret" and not interprets():
        from svirt.errors import AuditError

        raise AuditError("libauparse is not available: the core cannot write -i output")
    run.opts.decided = 1
    run.opts.format = {"raw": 0, "default": 1, "interpret": 2}[fmt]
    run.opts.out_fd = fd
    handle = _lib.svs_new(ctypes.byref(run.opts))
    for _ in run.run(handle):
        pass
    if run.write_error:
        raise BrokenPipeError(run.write_error, os.strerror(run.write_error))
    return int(run.matched)


_Found = tuple[list[bytes], list[int], list[int], list[int], int, int, int]


def _matching(
    inputs: Sequence[LogInput], criteria: SearchCriteria, stats: ReadStats
) -> Iterator[list[_Found]]:
    """Batches of matching events as (lines, raw lengths, files, offsets, sec, milli,
    serial), assembled and matched by the core."""
    run = _Run(inputs, criteria, stats)
    run.opts.decided = 0
    run.opts.out_fd = -1
    handle = _lib.svs_new(ctypes.byref(run.opts))
    maps: list[mmap.mmap | bytes] = []
    evp = ctypes.c_void_p()
    recp = ctypes.c_void_p()
    try:
        for _ in run.run(handle):
            while len(maps) < len(run.opened):
                maps.append(_map(run.opened[len(maps)]))
            n = _lib.svs_batch(handle, ctypes.byref(evp), ctypes.byref(recp))
            if not n:
                continue
            evs = memoryview(ctypes.string_at(evp.value or 0, 40 * n)).cast("q")
            nrec = evs[5 * (n - 1)] + evs[5 * (n - 1) + 1]
            recs = memoryview(ctypes.string_at(recp.value or 0, 40 * nrec)).cast("q")
            _lib.svs_clear_batch(handle)
            found: list[_Found] = []
            for e in range(0, 5 * n, 5):
                first, count = evs[e], evs[e + 1]
                lines: list[bytes] = []
                raw: list[int] = []
                files: list[int] = []
                offsets: list[int] = []
                for r in range(5 * first, 5 * (first + count), 5):
                    f, off = recs[r], recs[r + 1]
                    lines.append(maps[f][off : off + recs[r + 2]])
                    raw.append(recs[r + 3])
                    files.append(f)
                    offsets.append(off)
                found.append((lines, raw, files, offsets, evs[e + 2], evs[e + 3], evs[e + 4]))
            if found:
                yield found
    finally:
        for m in maps:
            if isinstance(m, mmap.mmap):
                m.close()


def _map(path: str) -> mmap.mmap | bytes:
    with open(path, "rb") as fh:
        try:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return b""


def scan_events(
    inputs: Sequence[LogInput], criteria: SearchCriteria, stats: ReadStats
) -> Iterator[Event]:
    """Matching events in ausearch's order, as :class:`Event` objects (records parsed
    once, for the matching events only)."""
    paths = [inp.path for inp in inputs]
    for batch in _matching(inputs, criteria, stats):
        for lines, _raw, files, offsets, _sec, _milli, _serial in batch:
            records = []
            for i, line in enumerate(lines):
                rec = parse_record(line, paths[files[i]], 0, offsets[i])
                if isinstance(rec, Record):
                    records.append(rec)
            yield Event(tuple(records))
