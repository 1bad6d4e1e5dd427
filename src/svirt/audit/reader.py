"""Streaming reader for audit logs: raw and ENRICHED records, rotated sets, stdin, gzip.

An audit log is a sequence of lines ``[node=N ]type=T msg=audit(SEC.MS:SERIAL): fields``.
auditd 3's ENRICHED format appends byte 0x1D and the interpreted values of some fields
(``\\x1dARCH=x86_64 SYSCALL=openat UID="qemu"``); the part before 0x1D is the raw record.
The reader also accepts what people paste from other tools: ``ausearch -i`` output (local
date and time in the header, ``----`` separators), ``ausearch`` default output
(``time->`` lines) and syslog/journal lines carrying ``type=1400 audit(...)``.

Nothing here ever raises on bad input: a line that is not a record is counted in
:class:`ReadStats` (with the first few locations) and skipped. Memory is bounded: files
are read in chunks, and a line longer than :data:`MAX_LINE` is never held whole in
memory. Like ausearch, a record longer than :data:`AUSEARCH_RECORD` bytes is cut there.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import stat
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from svirt.audit._tables import MSG_TYPES
from svirt.errors import AuditError

__all__ = [
    "AUSEARCH_RECORD",
    "DEFAULT_AUDITD_CONF",
    "DEFAULT_LOG",
    "ENRICHED_SEPARATOR",
    "MAX_LINE",
    "LogInput",
    "ReadStats",
    "Record",
    "expand_inputs",
    "iter_line_blocks",
    "iter_lines",
    "iter_records",
    "looks_standard",
    "msg_type_id",
    "msg_type_name",
    "parse_record",
    "rotated_set",
    "system_log",
]

log = logging.getLogger(__name__)

ENRICHED_SEPARATOR = b"\x1d"
MAX_LINE = 1 << 20
# ausearch reads a record into MAX_AUDIT_MESSAGE_LENGTH (8970) bytes: a longer line is cut
# to its first 8969 bytes and the rest of it is dropped. svirt does the same (and counts
# lines over MAX_LINE, which are never held whole in memory).
AUSEARCH_RECORD = 8969
CHUNK_SIZE = 1 << 22
DEFAULT_LOG = Path("/var/log/audit/audit.log")
DEFAULT_AUDITD_CONF = Path("/etc/audit/auditd.conf")
_MAX_EXAMPLES = 5

_NAME_TO_ID: dict[str, int] = {name: num for num, name in MSG_TYPES.items()}
_BYTES_NAME_TO_ID: dict[bytes, int] = {name.encode(): num for num, name in MSG_TYPES.items()}
_UNKNOWN_TYPE = re.compile(r"UNKNOWN\[(\d+)\]\Z")
# Header of a pasted ``ausearch -i`` record: local date, time, milliseconds, serial.
_INTERP_STAMP = re.compile(
    rb"(\d{1,2})/(\d{1,2})/(\d{2}|\d{4}) (\d{1,2}):(\d{2}):(\d{2})\.(\d{3}):(\d+)\Z"
)
_RAW_STAMP = re.compile(rb"(\d+)\.(\d+):(\d+)\Z")
# A record inside a syslog/journal/dmesg line: ``audit: type=1400 audit(1.2:3): ...``.
_EMBEDDED = re.compile(rb"type=([A-Za-z0-9_\[\]]+) (?:msg=)?audit\(([^)]*)\):? ?")


def msg_type_id(name: str) -> int:
    """The message type number for a name (case-insensitive, ``UNKNOWN[n]`` and digits
    accepted); -1 when unknown."""
    upper = name.upper()
    num = _NAME_TO_ID.get(upper)
    if num is not None:
        return num
    m = _UNKNOWN_TYPE.match(upper)
    if m:
        return int(m.group(1))
    if name.isdigit():
        return int(name)
    return -1


def msg_type_name(num: int) -> str:
    """The name auditd writes for a type number (``UNKNOWN[n]`` when it has none)."""
    return MSG_TYPES.get(num, f"UNKNOWN[{num}]")


def _type_id_bytes(name: bytes) -> int:
    num = _BYTES_NAME_TO_ID.get(name)
    if num is not None:
        return num
    return msg_type_id(name.decode("ascii", "replace"))


@dataclass(frozen=True, slots=True, init=False)
class Record:
    """One audit record (one line).

    ``line`` is the raw record as it was read (no newline, no enriched part); ``interp``
    the enriched part after 0x1D (or None). ``body`` is the text after the header.
    ``interpreted`` marks a record pasted from ``ausearch -i`` (values already
    interpreted, header time converted from local time). ``source`` is the file, with
    the line number (``lineno``, 0 when the reader did not count lines) and the byte
    offset of the line (``offset``, -1 when unknown).
    """

    type: str
    type_id: int
    sec: int
    milli: int
    serial: int
    node: str | None
    line: bytes
    body_start: int
    interp: bytes | None = None
    source: str = "-"
    lineno: int = 0
    interpreted: bool = False
    offset: int = -1

    def __init__(
        self,
        type: str,
        type_id: int,
        sec: int,
        milli: int,
        serial: int,
        node: str | None,
        line: bytes,
        body_start: int,
        interp: bytes | None = None,
        source: str = "-",
        lineno: int = 0,
        interpreted: bool = False,
        offset: int = -1,
    ) -> None:
        # Searches build a Record for every line they print: writing the slots directly is
        # three times faster than the frozen dataclass __init__ (object.__setattr__ each).
        _set_type(self, type)
        _set_type_id(self, type_id)
        _set_sec(self, sec)
        _set_milli(self, milli)
        _set_serial(self, serial)
        _set_node(self, node)
        _set_line(self, line)
        _set_body_start(self, body_start)
        _set_interp(self, interp)
        _set_source(self, source)
        _set_lineno(self, lineno)
        _set_interpreted(self, interpreted)
        _set_offset(self, offset)

    @property
    def time(self) -> float:
        return self.sec + self.milli / 1000.0

    @property
    def body(self) -> bytes:
        return self.line[self.body_start :]

    @property
    def text(self) -> str:
        """The raw record as text (what ``--raw`` prints, enriched part included)."""
        raw = self.line if self.interp is None else self.line + ENRICHED_SEPARATOR + self.interp
        return raw.decode("utf-8", "replace")


_Setter = Callable[[Record, Any], None]
_set_type: _Setter = Record.__dict__["type"].__set__
_set_type_id: _Setter = Record.__dict__["type_id"].__set__
_set_sec: _Setter = Record.__dict__["sec"].__set__
_set_milli: _Setter = Record.__dict__["milli"].__set__
_set_serial: _Setter = Record.__dict__["serial"].__set__
_set_node: _Setter = Record.__dict__["node"].__set__
_set_line: _Setter = Record.__dict__["line"].__set__
_set_body_start: _Setter = Record.__dict__["body_start"].__set__
_set_interp: _Setter = Record.__dict__["interp"].__set__
_set_source: _Setter = Record.__dict__["source"].__set__
_set_lineno: _Setter = Record.__dict__["lineno"].__set__
_set_interpreted: _Setter = Record.__dict__["interpreted"].__set__
_set_offset: _Setter = Record.__dict__["offset"].__set__


@dataclass(slots=True)
class ReadStats:
    """What the reader saw. ``malformed_examples`` holds the first few bad lines'
    locations and reasons (``file:line: reason``). ``events`` counts the events the
    engine assembled (the fast engine assembles only the anchored ones); ``lines`` is
    counted by the exact engine, ``bytes`` by the fast one."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    records: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    events: int = 0
    forced_complete: int = 0
    bytes: int = 0

    def note_malformed(self, source: str, lineno: int, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < _MAX_EXAMPLES:
            self.malformed_examples.append(f"{source}:{lineno}: {reason}")

    def summary(self) -> str | None:
        """One line for stderr when some lines were skipped, else None."""
        if not self.malformed:
            return None
        first = self.malformed_examples[0] if self.malformed_examples else ""
        noun = "line" if self.malformed == 1 else "lines"
        return f"skipped {self.malformed} malformed {noun} (first: {first})"


@dataclass(frozen=True, slots=True)
class LogInput:
    """One input: a file path, or ``-`` for standard input."""

    path: str

    @property
    def is_stdin(self) -> bool:
        return self.path == "-"

    def open(self) -> BinaryIO:
        """Open for binary reading; gzip files (by magic) are decompressed."""
        if self.is_stdin:
            return sys.stdin.buffer
        try:
            fh: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - returned to the caller
        except OSError as exc:
            raise AuditError(
                f"cannot read audit log: {exc.strerror or exc}", source=self.path
            ) from None
        try:
            magic = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
        except OSError:
            magic = b""
        if magic == b"\x1f\x8b":
            return _GzipInput(fileobj=fh, mode="rb")  # type: ignore[return-value]
        return fh


class _GzipInput(gzip.GzipFile):
    """A gzip log whose damage (truncated: EOFError; corrupt: zlib.error) surfaces as
    the OSError every reader already counts or reports in one line (issue 11: those two
    escaped as tracebacks). The smallest fix at the entry point; issue 13 reworks the
    readers behind it."""

    def read(self, size: int | None = -1) -> bytes:
        try:
            return super().read(-1 if size is None else size)
        except (EOFError, zlib.error) as exc:
            raise gzip.BadGzipFile(f"damaged gzip file: {exc}") from None

    def read1(self, size: int = -1) -> bytes:
        try:
            return super().read1(size)
        except (EOFError, zlib.error) as exc:
            raise gzip.BadGzipFile(f"damaged gzip file: {exc}") from None


def system_log(conf: Path = DEFAULT_AUDITD_CONF) -> Path:
    """The log auditd writes: ``log_file`` in auditd.conf, else the default path."""
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        return DEFAULT_LOG
    for raw in text.splitlines():
        key, sep, value = raw.partition("=")
        if sep and key.strip() == "log_file" and value.strip():
            return Path(value.strip())
    return DEFAULT_LOG


def rotated_set(base: Path) -> list[Path]:
    """``base`` and its rotations, oldest first: ``base.N … base.1 base``. Numbering
    stops at the first gap, as ausearch's does; ``base.N.gz`` counts as ``base.N``."""
    older: list[Path] = []
    n = 1
    while True:
        plain = base.with_name(f"{base.name}.{n}")
        packed = base.with_name(f"{base.name}.{n}.gz")
        if plain.exists():
            older.append(plain)
        elif packed.exists():
            older.append(packed)
        else:
            break
        n += 1
    older.reverse()
    return [*older, base] if base.exists() or not older else older


def expand_inputs(
    paths: Sequence[str] | None, *, conf: Path = DEFAULT_AUDITD_CONF
) -> list[LogInput]:
    """Inputs in reading order. No paths: the system log's rotated set. A directory:
    its ``audit.log`` rotated set. A file: itself. ``-``: standard input."""
    if not paths:
        base = system_log(conf)
        files = rotated_set(base)
        if not any(p.exists() for p in files):
            raise AuditError("cannot read audit log: No such file or directory", source=str(base))
        return [LogInput(str(p)) for p in files]
    out: list[LogInput] = []
    for p in paths:
        if p == "-":
            out.append(LogInput("-"))
            continue
        try:
            mode = os.stat(p).st_mode
        except OSError as exc:
            raise AuditError(f"cannot read audit log: {exc.strerror or exc}", source=p) from None
        if stat.S_ISDIR(mode):
            base = Path(p) / "audit.log"
            files = [f for f in rotated_set(base) if f.exists()]
            if not files:
                raise AuditError("no audit.log in this directory", source=p)
            out.extend(LogInput(str(f)) for f in files)
        else:
            out.append(LogInput(p))
    return out


_TOO_LONG = f"line too long (over {MAX_LINE} bytes; its first {AUSEARCH_RECORD} kept, as ausearch)"


def iter_line_blocks(
    stream: BinaryIO, stats: ReadStats, source: str, *, chunk_size: int = CHUNK_SIZE
) -> Iterator[list[bytes]]:
    """Lists of complete lines without their newlines, one list per chunk read (the fast
    engine works on whole blocks). A line too long to end within the next chunk is
    counted as malformed and not accumulated: its first :data:`AUSEARCH_RECORD` bytes are
    passed on if it is a record (ausearch keeps them), the rest is skipped; lines longer
    than :data:`MAX_LINE` that do fit are passed on for the caller to count."""
    rest = b""
    skipping = False
    lineno = 0
    while True:
        try:
            chunk = stream.read(chunk_size)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            stats.note_malformed(source, lineno + 1, f"read error: {exc}")
            break
        if not chunk:
            break
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            chunk = chunk[nl + 1 :]
            skipping = False
        lines = chunk.split(b"\n")
        if rest:
            lines[0] = rest + lines[0]
        rest = lines.pop()
        if len(rest) > MAX_LINE:
            stats.note_malformed(source, lineno + len(lines) + 1, _TOO_LONG)
            if rest.startswith((b"type=", b"node=")):  # a record: ausearch keeps its head
                lines.append(rest[:AUSEARCH_RECORD])
            else:
                lineno += 1
            rest = b""
            skipping = True
        lineno += len(lines)
        yield lines
    if rest and not skipping:
        yield [rest]


def iter_lines(
    stream: BinaryIO, stats: ReadStats, source: str, *, chunk_size: int = CHUNK_SIZE
) -> Iterator[tuple[int, bytes]]:
    """``(lineno, line)`` without the newline. A line is cut to ausearch's
    :data:`AUSEARCH_RECORD` bytes; one longer than :data:`MAX_LINE` is also counted as
    malformed (and skipped unless it is a record)."""
    lineno = 0
    for lines in iter_line_blocks(stream, stats, source, chunk_size=chunk_size):
        for line in lines:
            lineno += 1
            if len(line) > AUSEARCH_RECORD:
                if len(line) > MAX_LINE:
                    stats.note_malformed(source, lineno, _TOO_LONG)
                    if not line.startswith((b"type=", b"node=")):
                        continue
                line = line[:AUSEARCH_RECORD]
            yield lineno, line
    stats.lines += lineno


def _interpreted_stamp(stamp: bytes) -> tuple[int, int, int] | None:
    m = _INTERP_STAMP.match(stamp)
    if not m:
        return None
    mon, day, year, hour, minute, sec, milli, serial = (int(g) for g in m.groups())
    if year < 100:
        year += 2000 if year < 69 else 1900
    try:
        epoch = time.mktime((year, mon, day, hour, minute, sec, 0, 0, -1))
    except (OverflowError, ValueError):
        return None
    return int(epoch), milli, serial


def parse_record(line: bytes, source: str = "-", lineno: int = 0, offset: int = -1) -> Record | str:
    """Parse one line into a :class:`Record`, or return why it is not one."""
    interp: bytes | None = None
    sep = line.find(ENRICHED_SEPARATOR)
    if sep >= 0:
        interp = line[sep + 1 :]
        line = line[:sep]
    line = line.rstrip(b"\r")
    node: str | None = None
    pos = 0
    if line.startswith(b"node="):
        sp = line.find(b" ")
        if sp < 0:
            return "no record after node="
        node = line[5:sp].decode("utf-8", "replace")
        pos = sp + 1
    if line.startswith(b"type=", pos):
        sp = line.find(b" ", pos)
        if sp < 0:
            return "no msg=audit(...) header"
        type_bytes = line[pos + 5 : sp]
        if not line.startswith(b"msg=audit(", sp + 1):
            return "no msg=audit(...) header"
        open_at = sp + 11
        close = line.find(b")", open_at)
        if close < 0:
            return "unterminated msg=audit( header"
        stamp = line[open_at:close]
        body_start = close + 1
        if line.startswith(b": ", body_start):
            body_start += 2
        elif line.startswith(b" : ", body_start):
            body_start += 3
        elif line.startswith(b":", body_start):
            body_start += 1
    else:
        m = _EMBEDDED.search(line)
        if m is None:
            return "not an audit record"
        type_bytes = m.group(1)
        stamp = m.group(2)
        body_start = m.end()
        if type_bytes.isdigit():
            type_bytes = msg_type_name(int(type_bytes)).encode()
    interpreted = False
    raw = _RAW_STAMP.match(stamp)
    if raw is not None:
        sec, milli, serial = int(raw.group(1)), int(raw.group(2)), int(raw.group(3))
    else:
        parsed = _interpreted_stamp(stamp)
        if parsed is None:
            return f"bad time stamp '{stamp.decode('utf-8', 'replace')[:40]}'"
        sec, milli, serial = parsed
        interpreted = True
    type_name = type_bytes.decode("utf-8", "replace")
    return Record(
        type=type_name,
        type_id=_type_id_bytes(type_bytes),
        sec=sec,
        milli=milli,
        serial=serial,
        node=node,
        line=line,
        body_start=body_start,
        interp=interp,
        source=source,
        lineno=lineno,
        interpreted=interpreted,
        offset=offset,
    )


_STANDARD_LINE = re.compile(rb"(?:node=\S+ )?type=\S+ msg=audit\(\d+\.\d+:\d+\)")
_PEEK = 64 * 1024


def looks_standard(inp: LogInput) -> bool:
    """True when the input's first lines (64 KiB) are all plain auditd records, not
    pasted ``ausearch`` output or syslog lines: what the faster engines read."""
    fh = inp.open()
    try:
        head = fh.read(_PEEK)
    finally:
        if not inp.is_stdin:
            fh.close()
    lines = head.split(b"\n")
    if len(head) == _PEEK:
        lines.pop()
    return all(_STANDARD_LINE.match(line) for line in lines if line)


def _is_separator(line: bytes) -> bool:
    """Lines ausearch prints between events (``----``, ``time->...``) and blank lines."""
    stripped = line.strip()
    return not stripped or stripped.startswith((b"----", b"time->", b"<no matches>"))


def iter_records(inputs: Iterable[LogInput], stats: ReadStats) -> Iterator[Record]:
    """Every record of every input, in order; bad lines are counted, never raised."""
    for inp in inputs:
        stats.files.append(inp.path)
        fh = inp.open()
        try:
            for lineno, line in iter_lines(fh, stats, inp.path):
                rec = parse_record(line, inp.path, lineno)
                if isinstance(rec, str):
                    if not _is_separator(line):
                        stats.note_malformed(inp.path, lineno, rec)
                    continue
                stats.records += 1
                yield rec
        finally:
            if not inp.is_stdin:
                fh.close()
