"""``svirt audit search``: ausearch's options and answers, on raw and enriched logs.

Criteria mean what ausearch's options mean (audit-userspace 3.0.9, ``ausearch-options.c``,
``ausearch-match.c``, ``ausearch-parse.c``), so the same command finds the same events:

- ``-m TYPE[,TYPE]``: the event has a record of one of these types (names are
  case-insensitive, numbers accepted, ``ALL`` means no filter);
- ``-c``, ``-x``, ``-k``: substring of the event's comm, exe, or one of its keys
  (whole string with ``-w``), the value taken from the records the way ausearch takes it
  (a later SYSCALL record's comm overrides the AVC's, a SYSCALL without comm makes the
  event unmatchable, ...);
- ``-p PID``, ``-sv yes|no``, ``-a SERIAL``;
- ``-ts``/``-te``: a date (``11/18/26``; a 4-digit year is refused as ausearch refuses
  it), a time (``11:06[:40]``),
  both, or ``recent``, ``now``, ``today``, ``yesterday``, ``this-week``, ``week-ago``,
  ``this-month``, ``this-year``, ``boot`` (now minus the uptime, as ausearch computes
  it); whole seconds, local time, as ausearch. The
  clock is a parameter (``now``, ``boot_time``) so results are reproducible.

The per-record rules are in :mod:`svirt.audit.matching`, event assembly and order in
:mod:`svirt.audit.events`. :func:`search` uses the compiled core
(:mod:`svirt.audit.native`, the same rules in C) on plain log files; otherwise the
look-around engine (:mod:`svirt.audit.fastscan`) when the criteria name a message type or
an event serial whose records are sparse in the log, and the exact line-by-line one
(:func:`scan_exact`, the definition the others are tested against) for the rest.
"""

from __future__ import annotations

import grp
import pwd
import time as _time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from svirt.audit.events import Event, EventGrouper
from svirt.audit.matching import Matcher
from svirt.audit.reader import (
    _BYTES_NAME_TO_ID,
    _RAW_STAMP,
    _TOO_LONG,
    AUSEARCH_RECORD,
    MAX_LINE,
    LogInput,
    ReadStats,
    Record,
    iter_line_blocks,
    msg_type_id,
    parse_record,
)
from svirt.errors import AuditError

__all__ = [
    "TIME_KEYWORDS",
    "Matcher",
    "SearchCriteria",
    "boot_time",
    "parse_event_id",
    "parse_exit",
    "parse_gid",
    "parse_loginuid",
    "parse_message_types",
    "parse_pid",
    "parse_success",
    "parse_syscall",
    "parse_time",
    "parse_uid",
    "scan_exact",
    "search",
]

TIME_KEYWORDS = (
    "now",
    "recent",
    "today",
    "yesterday",
    "this-week",
    "week-ago",
    "this-month",
    "this-year",
    "boot",
)
_DAY = 24 * 60 * 60
_SYSCALL = msg_type_id("SYSCALL")

# ---------------------------------------------------------------------------------------
# Criteria


@dataclass(frozen=True, slots=True)
class SearchCriteria:
    """What to look for; every field set must match (ausearch ANDs its options).

    ``start``/``end`` are epoch seconds (inclusive, compared with the event's whole
    seconds). Strings match as substrings unless ``whole_word``.
    """

    types: frozenset[int] | None = None
    comm: str | None = None
    exe: str | None = None
    key: str | None = None
    pid: int | None = None
    uid: int | None = None
    euid: int | None = None
    loginuid: int | None = None
    gid: int | None = None
    egid: int | None = None
    uid_all: bool = False
    # a name given for -ui/-ue/-ul/-ua: ausearch then compares names, not numbers
    uid_name: str | None = None
    euid_name: str | None = None
    loginuid_name: str | None = None
    gid_all: bool = False
    success: bool | None = None
    # -sc: the number; a name given also requires this machine's arch (0: any arch)
    syscall: int | None = None
    syscall_arch: int = 0
    # -e: the exit value (an errno name is its positive number, as ausearch takes it)
    exit: int | None = None
    event_id: int | None = None
    start: int | None = None
    end: int | None = None
    whole_word: bool = False

    @property
    def anchored(self) -> bool:
        """True when a record type or serial narrows the search (the fast engine's cue)."""
        return bool(self.types) or self.event_id is not None


def parse_message_types(text: str) -> frozenset[int] | None:
    """``-m``: a comma list of names or numbers; ``ALL`` means no filter (None)."""
    if text.strip().upper() == "ALL":
        return None
    out: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item[0].isdigit():
            try:
                out.add(int(item))
            except ValueError:
                raise AuditError(f"invalid message type '{item}'") from None
            continue
        num = msg_type_id(item)
        if num < 0:
            raise AuditError(f"unknown message type '{item}' (try AVC, USER_AVC, SYSCALL, ...)")
        out.add(num)
    if not out:
        raise AuditError("-m needs a message type")
    return frozenset(out)


def parse_pid(text: str) -> int:
    if not text or not text[0].isdigit() or not text.isdigit():
        raise AuditError(f"process id must be a numeric value, was '{text}'")
    return int(text)


def _leading_number(text: str) -> int:
    """strtoul()'s reading: the leading digits, kept to 32 bits as in a uid_t."""
    digits = ""
    for ch in text:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    return int(digits) & 0xFFFFFFFF


def _parse_id(
    text: str, what: str, lookup: Callable[[str], int], negative: bool, names: bool = True
) -> int | str:
    """A uid/gid option as ausearch reads it: a number (its leading digits), a name,
    and for the login uid also ``-1``-style negatives (``-ul -1``: auid unset)."""
    if text[:1].isdigit() and text[:1].isascii():
        return _leading_number(text)
    if negative and len(text) >= 2 and text[0] == "-" and text[1].isdigit():
        return -_leading_number(text[1:]) & 0xFFFFFFFF
    if text.startswith("-"):
        raise AuditError(f"{what} must be a number or a name, was '{text}'")
    try:
        number = lookup(text)
    except KeyError:
        raise AuditError(f"{what} is non-numeric and unknown ({text})") from None
    return text if names else number


def _user_id(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _group_id(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def parse_uid(text: str) -> int | str:
    """A number, or a known user name (kept: ausearch compares user names as names)."""
    return _parse_id(text, "user ID", _user_id, negative=False)


def parse_loginuid(text: str) -> int | str:
    return _parse_id(text, "login user ID", _user_id, negative=True)


def parse_gid(text: str) -> int:
    """A number or a group name (ausearch compares gids as numbers)."""
    gid = _parse_id(text, "group ID", _group_id, negative=False, names=False)
    assert isinstance(gid, int)
    return gid


def parse_event_id(text: str) -> int:
    if not text.isdigit():
        raise AuditError(f"audit event id must be a numeric value, was '{text}'")
    return int(text)


def parse_success(text: str) -> bool:
    """``-sv``: ``yes`` or ``no`` (ausearch accepts any word containing one of them and
    treats everything but ``yes`` as no; svirt asks for the word)."""
    if text == "yes":
        return True
    if text == "no":
        return False
    raise AuditError(f"success value must be 'yes' or 'no', was '{text}'")


def parse_exit(text: str) -> int:
    """``-e``: a number as strtoll(…, 0) reads it (``-13``, ``0x10``, ``015``) or an errno
    name, any case, as libaudit's table has it (``EACCES`` is 13, not -13)."""
    import ctypes
    import errno

    from svirt.audit.matching import strtoll0

    if text[:1].isdigit() or (text[:1] == "-" and text[1:2].isdigit()):
        value = strtoll0(text.encode())
        if not -(2**63) <= value < 2**63:
            raise AuditError(f"exit value out of range, was '{text}'")
        return value
    try:
        number = int(ctypes.CDLL("libaudit.so.1").audit_name_to_errno(text.encode()))
    except OSError:
        number = getattr(errno, text.upper(), 0) if text.isalnum() else 0
    if number <= 0:
        raise AuditError(f"unknown errno name '{text}'")
    return number


def parse_syscall(text: str) -> tuple[int, int]:
    """``-sc``: a number (any arch) or a name of this machine's syscall table, which
    ausearch then compares together with the records' arch. Returns (number, arch)."""
    import platform

    from svirt.audit._tables import ARCHES, SYSCALLS

    if text[:1].isdigit():
        if not text.isdigit():
            raise AuditError(f"system call must be a number or a name, was '{text}'")
        return int(text), 0
    machine = platform.machine()
    table = SYSCALLS.get(machine, {})
    arch = next((a for a, m in ARCHES.items() if m == machine), 0)
    for number, name in table.items():
        if name == text and arch:
            return number, arch
    raise AuditError(f"system call '{text}' not found for {machine}")


# ---------------------------------------------------------------------------------------
# Time


def boot_time(now: float | None = None) -> int | None:
    """The boot time as ausearch computes it for ``boot``: the current second minus the
    kernel's uptime from ``sysinfo(2)`` (whole seconds, rounded up by the kernel); None
    when it cannot be read."""
    import ctypes

    buf = (ctypes.c_long * 32)()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.sysinfo(ctypes.byref(buf)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return int(_time.time() if now is None else now) - int(buf[0])


def _parse_date(text: str) -> tuple[int, int, int] | None:
    """``%x`` of the C locale (``11/18/26``); ausearch refuses a 4-digit year, and so
    does svirt."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p.isdigit() and p for p in parts):
        return None
    mon, day, year = int(parts[0]), int(parts[1]), int(parts[2])
    if len(parts[2]) > 2:
        return None
    year += 2000 if year < 69 else 1900
    if not (1 <= mon <= 12 and 1 <= day <= 31):
        return None
    return year, mon, day


def _parse_clock(text: str) -> tuple[int, int, int] | None:
    """``%X`` of the C locale; ``HH:MM`` gets ``:00`` as ausearch adds it."""
    parts = text.split(":")
    if len(parts) == 2:
        parts.append("00")
    if len(parts) != 3 or not all(p.isdigit() and 1 <= len(p) <= 2 for p in parts):
        return None
    h, m, s = (int(p) for p in parts)
    if h > 23 or m > 59 or s > 61:
        return None
    return h, m, s


def _mktime(y: int, mon: int, d: int, h: int, mi: int, s: int, now: float) -> int:
    # ausearch takes the DST flag from the current time, not from the date asked for.
    isdst = _time.localtime(now).tm_isdst
    return int(_time.mktime((y, mon, d, h, mi, s, 0, 0, isdst)))


def _keyword_date(word: str, now: float, boot: int | None) -> tuple[int, int, int] | int:
    """A keyword's date (to be combined with a time of day), or an exact epoch."""
    if word == "now":
        return int(now)
    if word == "recent":
        return int(now) - 10 * 60
    if word == "boot":
        if boot is None:
            raise AuditError("cannot read the boot time (sysinfo uptime)")
        return boot
    lt = _time.localtime(now)
    if word == "today":
        return lt.tm_year, lt.tm_mon, lt.tm_mday
    if word == "yesterday":
        y = _time.localtime(now - _DAY)
        return y.tm_year, y.tm_mon, y.tm_mday
    if word == "this-week":
        # tm_wday counts from Monday in Python, from Sunday in C; ausearch starts on Sunday.
        back = (lt.tm_wday + 1) % 7
        w = _time.localtime(now - back * _DAY)
        return w.tm_year, w.tm_mon, w.tm_mday
    if word == "week-ago":
        w = _time.localtime(now - 7 * _DAY)
        return w.tm_year, w.tm_mon, w.tm_mday
    if word == "this-month":
        return lt.tm_year, lt.tm_mon, 1
    if word == "this-year":
        return lt.tm_year, 1, 1
    raise AuditError(f"unknown time keyword '{word}'")


def parse_time(values: Sequence[str], *, end: bool, now: float, boot: int | None = None) -> int:
    """``-ts``/``-te`` arguments (one or two words) to epoch seconds, as ausearch 3.0.9.

    Start: a date alone means its midnight, a time alone means today. End: a date alone
    means that date at the current time of day. Keywords mean the start of their day
    (``today`` as an end means now); ``now``, ``recent`` and ``boot`` are instants.
    """
    opt = "-te" if end else "-ts"
    words = [v for v in values if v]
    if not words or len(words) > 2:
        raise AuditError(f"{opt} requires either date and/or time")
    date_word: str | None
    clock_word: str | None
    if len(words) == 2:
        # ausearch: whichever word has a ':' is the time.
        date_word, clock_word = (words[1], words[0]) if ":" in words[0] else (words[0], words[1])
    elif words[0] in TIME_KEYWORDS or ":" not in words[0]:
        date_word, clock_word = words[0], None
    else:
        date_word, clock_word = None, words[0]

    lt = _time.localtime(now)
    if date_word is None:
        ymd: tuple[int, int, int] = (lt.tm_year, lt.tm_mon, lt.tm_mday)
    elif date_word in TIME_KEYWORDS:
        if end and date_word == "today":
            return int(now)
        kd = _keyword_date(date_word, now, boot)
        if isinstance(kd, int):
            return kd
        ymd = kd
        if clock_word is None:
            return _mktime(*ymd, 0, 0, 0, now)
    else:
        parsed = _parse_date(date_word)
        if parsed is None:
            raise AuditError(
                f"invalid {'end' if end else 'start'} date '{date_word}': "
                "expected MM/DD/YY (a 2-digit year, as ausearch) or a keyword"
            )
        ymd = parsed
    if clock_word is not None:
        hms = _parse_clock(clock_word)
        if hms is None:
            raise AuditError(
                f"invalid {'end' if end else 'start'} time '{clock_word}': expected HH:MM[:SS]"
            )
    elif end:
        hms = (lt.tm_hour, lt.tm_min, lt.tm_sec)
    else:
        hms = (0, 0, 0)
    if ymd[0] < 2004:
        raise AuditError(f"invalid {opt} year {ymd[0]}")
    return _mktime(*ymd, *hms, now)


# ---------------------------------------------------------------------------------------
# The exact engine


def _stamp(line: bytes) -> tuple[int, int]:
    """(seconds, serial) of a record line whose header parsed before."""
    i = line.find(b"audit(")
    close = line.find(b")", i)
    stamp = line[i + 6 : close]
    m = _RAW_STAMP.match(stamp)
    if m is not None:
        return int(m.group(1)), int(m.group(3))
    rec = parse_record(line)
    if isinstance(rec, str):
        return 0, 0
    return rec.sec, rec.serial


_Item = tuple[bytes, int, int, int]  # line, input index, line number, byte offset


def _event(items: list[_Item], inputs: Sequence[LogInput]) -> Event:
    records: list[Record] = []
    for line, src, lineno, offset in items:
        rec = parse_record(line, inputs[src].path, lineno, offset)
        if isinstance(rec, Record):
            records.append(rec)
    return Event(tuple(records))


def scan_exact(
    inputs: Sequence[LogInput], criteria: SearchCriteria, stats: ReadStats | None = None
) -> Iterator[Event]:
    """Every line, grouped as ausearch groups them, matched as ausearch matches them."""
    stats = stats if stats is not None else ReadStats()
    matcher = Matcher(criteria)
    grouper: EventGrouper[_Item] = EventGrouper()
    building = grouper.building
    start, end = criteria.start, criteria.end
    match = matcher.match_lines
    raw_stamp = _RAW_STAMP.match
    names = _BYTES_NAME_TO_ID

    def emit(done: list[list[_Item]]) -> Iterator[Event]:
        for items in done:
            stats.events += 1
            sec, serial = _stamp(items[0][0])
            if match(sec, serial, [i[0] for i in items]):
                yield _event(items, inputs)

    for src, inp in enumerate(inputs):
        stats.files.append(inp.path)
        fh = inp.open()
        lineno = 0
        offset = 0
        try:
            for lines in iter_line_blocks(fh, stats, inp.path):
                for line in lines:
                    lineno += 1
                    at = offset
                    offset += len(line) + 1
                    if not line:
                        continue  # blank: a separator (issue 11: parsed one by one before)
                    noted = False
                    if len(line) > AUSEARCH_RECORD:
                        if len(line) > MAX_LINE:
                            stats.note_malformed(inp.path, lineno, _TOO_LONG)
                            noted = True
                        line = line[:AUSEARCH_RECORD]  # what ausearch reads of it
                    if line[:5] == b"type=":
                        sp = line.find(b" ", 5)
                        if line[sp + 1 : sp + 11] == b"msg=audit(":
                            close = line.find(b")", sp + 11)
                            if close > 0:
                                key = line[sp + 11 : close]
                                pending = building.get(key)
                                if pending is not None:
                                    pending.append((line, src, lineno, at))
                                    continue
                                m = raw_stamp(key)
                                if m is not None:
                                    sec = int(m.group(1))
                                    if (start is not None and sec < start) or (
                                        end is not None and sec > end
                                    ):
                                        continue
                                    tid = names.get(line[5:sp])
                                    if tid is None:
                                        tid = msg_type_id(line[5:sp].decode("ascii", "replace"))
                                    done = grouper.start(key, sec, tid, (line, src, lineno, at))
                                    if done:
                                        yield from emit(done)
                                    continue
                    rec = parse_record(line, inp.path, lineno)
                    if isinstance(rec, str):
                        if (
                            not noted
                            and line.strip()
                            and not line.lstrip().startswith((b"----", b"time->"))
                        ):
                            stats.note_malformed(inp.path, lineno, rec)
                        continue
                    if (start is not None and rec.sec < start) or (
                        end is not None and rec.sec > end
                    ):
                        continue
                    gkey = (f"{rec.node} " if rec.node is not None else "").encode()
                    gkey += f"{rec.sec}.{rec.milli:03d}:{rec.serial}".encode()
                    item = (line, src, lineno, at)
                    # Records pasted from ausearch output were grouped (and reversed) by
                    # ausearch already: group them by stamp alone.
                    tid = _SYSCALL if rec.interpreted else rec.type_id
                    if not grouper.append(gkey, item):
                        yield from emit(grouper.start(gkey, rec.sec, tid, item))
        finally:
            stats.lines += lineno
            if not inp.is_stdin:
                fh.close()
    yield from emit(grouper.finish())
    stats.forced_complete += grouper.forced
    stats.records = stats.lines - stats.malformed


def search(
    inputs: Sequence[LogInput],
    criteria: SearchCriteria,
    stats: ReadStats | None = None,
    *,
    engine: str = "auto",
    jobs: int = 1,
) -> Iterator[Event]:
    """Matching events from the inputs, in the order they complete.

    ``engine``: ``"native"`` is the compiled core (:mod:`svirt.audit.native`, every line,
    the same grouping; ``"auto"`` takes it whenever it can read the inputs); ``"exact"``
    reads every line in Python; ``"fast"`` scans for the records the
    criteria anchor on (message types, serial) and assembles only their events (see
    :mod:`svirt.audit.fastscan` for when the two can differ); ``"auto"`` picks fast when
    the criteria are anchored and the anchoring records are sparse. ``jobs``: processes
    the fast engine may use on one large file (see
    :func:`svirt.audit.fastscan.parallel_jobs`; they are started with the spawn method,
    so the program's main module must be safe to import).
    """
    stats = stats if stats is not None else ReadStats()
    if engine not in ("auto", "exact", "fast", "native"):
        raise AuditError(f"unknown search engine '{engine}'")
    from svirt.audit import native
    from svirt.audit.fastscan import prefer_fast, scan_fast

    if engine == "native" or (engine == "auto" and native.usable(inputs)):
        return native.scan_events(inputs, criteria, stats)

    if engine == "fast" or (engine == "auto" and prefer_fast(inputs, criteria)):
        return scan_fast(inputs, criteria, stats, jobs=jobs)
    return scan_exact(inputs, criteria, stats)
