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
- ``-ts``/``-te``: a date (``11/18/26``, also ``11/18/2026``), a time (``11:06[:40]``),
  both, or ``recent``, ``now``, ``today``, ``yesterday``, ``this-week``, ``week-ago``,
  ``this-month``, ``this-year``, ``boot``; whole seconds, local time, as ausearch. The
  clock is a parameter (``now``, ``boot_time``) so results are reproducible.

Two engines give the same events: :func:`search` picks the fast one
(:mod:`svirt.audit.fastscan`) when the criteria name a message type or an event serial,
and the exact line-by-line one (:func:`scan_exact`) otherwise.
"""

from __future__ import annotations

import time as _time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from svirt.audit.events import Event, EventGrouper
from svirt.audit.reader import (
    _BYTES_NAME_TO_ID,
    _RAW_STAMP,
    CHUNK_SIZE,
    MAX_LINE,
    LogInput,
    ReadStats,
    Record,
    msg_type_id,
    msg_type_name,
    parse_record,
)
from svirt.errors import AuditError

__all__ = [
    "TIME_KEYWORDS",
    "Matcher",
    "SearchCriteria",
    "boot_time",
    "parse_event_id",
    "parse_message_types",
    "parse_pid",
    "parse_success",
    "parse_time",
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

# Success values as ausearch stores them (success_t).
_UNSET, _FAILED, _SUCCESS = -1, 0, 1

_T = {
    name: msg_type_id(name)
    for name in (
        "SYSCALL",
        "LOGIN",
        "USER",
        "USER_AVC",
        "AVC",
        "CONFIG_CHANGE",
        "DAEMON_START",
        "DAEMON_END",
        "DAEMON_ABORT",
        "DAEMON_CONFIG",
        "DAEMON_ROTATE",
        "DAEMON_RESUME",
        "DAEMON_ACCEPT",
        "DAEMON_CLOSE",
        "FEATURE_CHANGE",
        "ANOM_LINK",
        "SECCOMP",
        "ANOM_PROMISCUOUS",
        "ANOM_ABEND",
        "MAC_POLICY_LOAD",
        "MAC_UNLBL_STCDEL",
        "INTEGRITY_DATA",
        "INTEGRITY_RULE",
        "NETFILTER_CFG",
        "EVENT_LISTENER",
        "TTY",
    )
}


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
    success: bool | None = None
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


# ---------------------------------------------------------------------------------------
# Time


def boot_time(stat_path: Path = Path("/proc/stat")) -> int | None:
    """The kernel's boot time (``btime``), or None when it cannot be read."""
    try:
        for line in stat_path.read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _parse_date(text: str) -> tuple[int, int, int] | None:
    """``%x`` of the C locale (``11/18/26``), and ``11/18/2026``."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p.isdigit() and p for p in parts):
        return None
    mon, day, year = int(parts[0]), int(parts[1]), int(parts[2])
    if len(parts[2]) <= 2:
        year += 2000 if year < 69 else 1900
    elif len(parts[2]) != 4:
        return None
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
            raise AuditError("cannot read the boot time (/proc/stat btime)")
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
                "expected MM/DD/YY or a keyword"
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
# Matching: ausearch's extraction of searchable items from the records of an event


def _strtoul(msg: bytes, pos: int) -> int:
    n = len(msg)
    while pos < n and msg[pos] in b" \t":
        pos += 1
    start = pos
    while pos < n and 48 <= msg[pos] <= 57:
        pos += 1
    return int(msg[start:pos]) if pos > start else 0


def _is_hex(c: int) -> bool:
    return 48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102


def _unescape(msg: bytes, pos: int) -> bytes | None:
    """ausearch's unescape(): ``(null)``-style words as they are, else the hex run."""
    n = len(msg)
    if pos < n and msg[pos] == 40:  # '('
        close = msg.find(b")", pos)
        if close < 0:
            return None
        return msg[pos : close + 1]
    end = pos
    while end < n and _is_hex(msg[end]):
        end += 1
    run = msg[pos:end]
    if len(run) < 2:
        return None
    if len(run) % 2:
        run = run[:-1]
    raw = bytes.fromhex(run.decode("ascii"))
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def _quoted(msg: bytes, pos: int) -> tuple[bytes, int] | None:
    end = msg.find(b'"', pos + 1)
    if end < 0:
        return None
    return msg[pos + 1 : end], end


class _Items:
    __slots__ = ("comm", "exe", "keys", "pid", "success")

    def __init__(self) -> None:
        self.pid = -1
        self.comm: bytes | None = None
        self.exe: bytes | None = None
        self.keys: list[bytes] | None = None
        self.success = _UNSET


class Matcher:
    """Decides whether an event matches, with ausearch's rules.

    Works on the raw lines of an event (enriched part and node prefix allowed); only
    the items a criterion needs are extracted, and a record missing an item ausearch
    requires makes the event not match, exactly as ausearch does.
    """

    def __init__(self, criteria: SearchCriteria) -> None:
        c = criteria
        self.criteria = c
        self.want_pid = c.pid is not None
        self.want_comm = c.comm is not None
        self.want_exe = c.exe is not None
        self.want_key = c.key is not None
        self.want_success = c.success is not None
        self._comm = c.comm.encode() if c.comm is not None else None
        self._exe = c.exe.encode() if c.exe is not None else None
        self._key = c.key.encode() if c.key is not None else None
        self._types = c.types
        self._literals: list[tuple[bytes, bytes, bytes]] = []
        for needle, name in ((c.comm, b"comm="), (c.exe, b"exe="), (c.key, b"key=")):
            if needle:
                self._literals.append((needle.encode(), name, name + b'"'))
        self._pid_digits = str(c.pid).encode() if c.pid is not None else None
        self._type_prefixes: tuple[bytes, ...] | None = None
        if c.types is not None:
            self._type_prefixes = tuple(
                b"type=" + msg_type_name(t).encode() + b" " for t in sorted(c.types)
            )

    # -- string comparison (strmatch) -------------------------------------------------
    def _strmatch(self, needle: bytes, haystack: bytes) -> bool:
        if self.criteria.whole_word:
            return needle == haystack
        return needle in haystack

    # -- per-record parsers (only what svirt's criteria use) -----------------------------
    def _task_info(self, msg: bytes, it: _Items) -> int:
        term = 0
        if self.want_pid:
            i = msg.find(b" pid=", term)
            if i < 0:
                return 16
            sp = msg.find(b" ", i + 5)
            if sp < 0:
                return 17
            it.pid = _strtoul(msg, i + 5)
            term = sp
        if self.want_comm:
            i = msg.find(b"comm=", term)
            if i < 0:
                return 38
            it.comm = None
            v = i + 5
            if msg[v : v + 1] == b'"':
                q = _quoted(msg, v)
                if q is None:
                    return 37
                it.comm, term = q
            else:
                it.comm = _unescape(msg, v)
        if self.want_exe:
            i = msg.find(b"exe=")
            if i < 0:
                return 40
            v = i + 4
            if msg[v : v + 1] == b'"':
                q = _quoted(msg, v)
                if q is None:
                    return 39
                it.exe, term = q
            else:
                it.exe = _unescape(msg, v)
        if self.want_success:
            i = msg.find(b"res=", term)
            if i >= 0:
                it.success = _strtoul(msg, i + 4)
        return 0

    def _syscall(self, msg: bytes, it: _Items) -> int:
        i = msg.find(b"syscall=")
        if i < 0:
            return 4
        term = msg.find(b" ", i + 8)
        if term < 0:
            return 5
        if self.want_success:
            i = msg.find(b"success=", term)
            if i >= 0:
                sp = msg.find(b" ", i + 8)
                if sp < 0:
                    return 7
                it.success = _SUCCESS if msg[i + 8 : sp] == b"yes" else _FAILED
                term = sp
        for arg in (b"a0=", b"a1="):
            i = msg.find(arg, term)
            if i < 0:
                return 11
            term = msg.find(b" ", i + 3)
            if term < 0:
                return 12
        rc = self._task_info(msg, it)
        if rc:
            return rc
        if self.want_key:
            i = msg.find(b"key=", term)
            if i >= 0:
                if it.keys is None:
                    it.keys = []
                v = i + 4
                if msg[v : v + 1] == b'"':
                    q = _quoted(msg, v)
                    if q is None:
                        return 44
                    it.keys.append(q[0])
                else:
                    raw = _unescape(msg, v)
                    if raw is None:
                        return 45
                    it.keys.extend(k for k in raw.split(b"\x01") if k)
        return 0

    def _user(self, msg: bytes, it: _Items) -> int:
        term = 0
        n = len(msg)
        if self.want_pid:
            i = msg.find(b"pid=")
            if i < 0:
                return 1
            sp = msg.find(b" ", i + 4)
            if sp < 0:
                return 2
            it.pid = _strtoul(msg, i + 4)
            term = sp
        mptr = term + 1
        if self.want_comm:
            i = msg.find(b"comm=", mptr)
            if i >= 0:
                v = i + 5
                if msg[v : v + 1] == b'"':
                    q = _quoted(msg, v)
                    if q is None:
                        return 16
                    it.comm, term = q
                else:
                    it.comm = _unescape(msg, v)
        i = msg.find(b"acct=", mptr)
        if i >= 0:
            ptr = i + 5
            term = ptr + 1
            if msg[ptr : ptr + 1] == b'"':
                while term < n and msg[term] != 34:
                    term += 1
            else:
                end = ptr
                while end < n and msg[end] != 32:
                    end += 1
                term = end
        mptr = term + 1
        if self.want_exe:
            i = msg.find(b"exe=", mptr)
            if i >= 0:
                v = i + 4
                if msg[v : v + 1] == b'"':
                    q = _quoted(msg, v)
                    if q is None:
                        return 26
                    it.exe, term = q
                else:
                    end = v
                    while end < n and msg[end] != 32:
                        end += 1
                    word = msg[v:end]
                    legacy = any(not _is_hex(c) for c in word)
                    it.exe = word if legacy else _unescape(msg, v)
        if self.want_success:
            i = msg.find(b"res=", mptr)
            if i >= 0:
                if msg.find(b"'", i + 4) < 0:
                    return 21
                it.success = _FAILED if msg.startswith(b"failed", i + 4) else _SUCCESS
            else:
                i = msg.find(b"result=", mptr)
                if i >= 0:
                    close = msg.find(b")", i + 7)
                    if close < 0:
                        return 22
                    word = msg[i + 7 : close].lower()
                    it.success = _SUCCESS if word == b"success" else _FAILED
        return 0

    def _avc(self, msg: bytes, type_id: int, it: _Items) -> int:
        term = 0
        i = msg.find(b"avc: ")
        if i >= 0:
            brace = msg.find(b"{", i + 5)
            if brace >= 0:
                if self.want_success:
                    denied = msg.find(b"denied", i + 5, brace) >= 0
                    it.success = _FAILED if denied else _SUCCESS
                close = msg.find(b"}", brace + 1)
                if close < 0:
                    return 2
                term = close
                while term > 0 and msg[term - 1] == 32:
                    term -= 1
        if type_id == _T["USER_AVC"]:
            rc = self._user(msg, it)
            return 0 if rc > 20 else rc
        if self.want_pid:
            i = msg.find(b"pid=", term)
            if i >= 0:
                sp = msg.find(b" ", i + 4)
                if sp < 0:
                    return 3
                it.pid = _strtoul(msg, i + 4)
                term = sp
        if self.want_comm and it.comm is None:
            i = msg.find(b"comm=", term)
            if i < 0:
                return 5
            v = i + 5
            if msg[v : v + 1] == b'"':
                q = _quoted(msg, v)
                if q is None:
                    return 6
                it.comm, term = q
            else:
                it.comm = _unescape(msg, v)
                term = v + 6
        if msg.find(b"tclass=", term) < 0:
            return 9
        return 0

    def _login(self, msg: bytes, it: _Items) -> int:
        term = 0
        if self.want_pid:
            i = msg.find(b"pid=")
            if i < 0:
                return 1
            sp = msg.find(b" ", i + 4)
            if sp < 0:
                return 2
            it.pid = _strtoul(msg, i + 4)
            term = sp
        if self.want_success:
            i = msg.find(b"res=", term)
            it.success = _strtoul(msg, i + 4) if i >= 0 else _SUCCESS
        return 0

    def _res_word(self, msg: bytes, start: int, it: _Items) -> int:
        i = msg.find(b"res=", start)
        if i >= 0:
            end = i + 4
            while end < len(msg) and (65 <= msg[end] <= 90 or 97 <= msg[end] <= 122):
                end += 1
            if end == i + 4:
                return 12
            it.success = _FAILED if msg[i + 4 : end][:6] == b"failed" else _SUCCESS
        return 0

    def _daemon1(self, msg: bytes, it: _Items) -> int:
        mptr = msg.find(b")")
        if mptr < 0:
            mptr = 0
        if self.want_pid:
            i = msg.find(b"pid=", mptr)
            if i < 0:
                return 4
            if msg.find(b" ", i + 4) < 0:
                return 5
            it.pid = _strtoul(msg, i + 4)
        if self.want_success:
            return self._res_word(msg, mptr, it)
        return 0

    def _daemon2(self, msg: bytes, it: _Items) -> int:
        if self.want_success:
            return 2 if self._res_word(msg, 0, it) else 0
        return 0

    def _simple(self, msg: bytes, type_id: int, it: _Items) -> int:
        term = 0
        if self.want_key:
            i = msg.find(b"key=")
            if i >= 0:
                if it.keys is None:
                    it.keys = []
                v = i + 4
                if msg[v : v + 1] == b'"':
                    q = _quoted(msg, v)
                    if q is None:
                        return 6
                    it.keys.append(q[0])
                    term = q[1]
                else:
                    raw = _unescape(msg, v)
                    if raw is None:
                        return 8
                    it.keys.extend(k for k in raw.split(b"\x01") if k)
        if type_id == _T["CONFIG_CHANGE"]:
            it.success = _SUCCESS
        if self.want_success:
            i = msg.find(b"res=", term)
            if i >= 0:
                it.success = _strtoul(msg, i + 4)
        return 0

    @staticmethod
    def _string_field(
        msg: bytes, name: bytes, term: int, open_rc: int
    ) -> tuple[int, bool, bytes | None, int]:
        """(rc, found, value, term) for a quoted-or-hex field searched from ``term``."""
        i = msg.find(name, term)
        if i < 0:
            return 0, False, None, term
        v = i + len(name)
        if msg[v : v + 1] == b'"':
            q = _quoted(msg, v)
            if q is None:
                return open_rc, True, None, term
            return 0, True, q[0], q[1]
        return 0, True, _unescape(msg, v), term

    def _kernel_anom(self, msg: bytes, type_id: int, it: _Items) -> int:
        if type_id == _T["ANOM_PROMISCUOUS"]:
            return 0
        term = 0
        if self.want_pid:
            i = msg.find(b"pid=", term)
            if i >= 0:
                sp = msg.find(b" ", i + 4)
                if sp < 0:
                    return 10
                it.pid = _strtoul(msg, i + 4)
                term = sp
        if self.want_comm:
            rc, found, value, term = self._string_field(msg, b"comm=", term, 12)
            if rc:
                return rc
            if found:
                it.comm = value
        if self.want_exe:
            rc, found, value, term = self._string_field(msg, b"exe=", term, 13)
            if rc:
                return rc
            if found:
                it.exe = value
            elif type_id != _T["ANOM_ABEND"]:
                return 14
        if type_id == _T["SECCOMP"]:
            i = msg.find(b"arch=", term)
            if i < 0:
                return 0
            term = msg.find(b" ", i + 5)
            if term < 0:
                return 15
            i = msg.find(b"syscall=", term)
            if i < 0:
                return 17
            term = msg.find(b" ", i + 8)
            if term < 0:
                return 18
        if self.want_success:
            i = msg.find(b"res=", term)
            if i >= 0:
                it.success = _strtoul(msg, i + 4)
        return 0

    def _integrity(self, msg: bytes, it: _Items) -> int:
        term = 0
        i = msg.find(b"pid=")
        if i >= 0:
            sp = msg.find(b" ", i + 4)
            if sp < 0:
                return 1
            it.pid = _strtoul(msg, i + 4)
            term = sp
        if self.want_comm:
            rc, found, value, term = self._string_field(msg, b"comm=", term, 7)
            if rc:
                return rc
            if found:
                it.comm = value
        if self.want_success:
            i = msg.find(b"res=", term)
            if i >= 0:
                it.success = _strtoul(msg, i + 4)
        return 0

    def _tty(self, msg: bytes, it: _Items) -> int:
        term = 0
        if self.want_pid:
            i = msg.find(b"pid=")
            if i >= 0:
                sp = msg.find(b" ", i + 4)
                if sp < 0:
                    return 1
                it.pid = _strtoul(msg, i + 4)
                term = sp
        if self.want_comm:
            rc, found, value, term = self._string_field(msg, b"comm=", term, 11)
            if rc:
                return rc
            if found:
                it.comm = value
        return 0

    def _kernel(self, msg: bytes, it: _Items) -> int:
        term = 0
        if self.want_pid and it.pid == -1:
            i = msg.find(b" pid=")
            if i < 0:
                return 54
            sp = msg.find(b" ", i + 5)
            if sp < 0:
                return 52
            it.pid = _strtoul(msg, i + 5)
            term = sp
        if self.want_comm and it.comm is None:
            rc, found, value, term = self._string_field(msg, b"comm=", term, 65)
            if rc:
                return rc
            if not found:
                return 66
            it.comm = value
        if self.want_exe and it.exe is None:
            rc, found, value, _t = self._string_field(msg, b"exe=", 0, 67)
            if rc:
                return rc
            it.exe = value if found else b"(null)"
        if self.want_success:
            i = msg.find(b"res=", term)
            if i >= 0:
                it.success = _strtoul(msg, i + 4)
        return 0

    def _record(self, msg: bytes, type_id: int, it: _Items) -> int:
        t = _T
        if type_id == t["SYSCALL"]:
            return self._syscall(msg, it)
        if type_id in (t["AVC"], t["USER_AVC"]):
            return self._avc(msg, type_id, it)
        if (
            type_id == t["USER"]
            or 1100 <= type_id <= 1106
            or 1108 <= type_id <= 1199
            or 2100 <= type_id <= 2999
        ):
            return self._user(msg, it)
        if type_id == t["LOGIN"]:
            return self._login(msg, it)
        if type_id in _DAEMON1:
            return self._daemon1(msg, it)
        if type_id in (t["DAEMON_ACCEPT"], t["DAEMON_CLOSE"]):
            return self._daemon2(msg, it)
        if (
            type_id == t["CONFIG_CHANGE"]
            or t["MAC_POLICY_LOAD"] <= type_id <= t["MAC_UNLBL_STCDEL"]
        ):
            return self._simple(msg, type_id, it)
        if type_id in (t["FEATURE_CHANGE"], t["ANOM_LINK"]):
            return self._task_info(msg, it)
        if type_id in (t["SECCOMP"], t["ANOM_PROMISCUOUS"], t["ANOM_ABEND"]):
            return self._kernel_anom(msg, type_id, it)
        if t["INTEGRITY_DATA"] <= type_id <= t["INTEGRITY_RULE"]:
            return self._integrity(msg, it)
        if type_id in (t["NETFILTER_CFG"], t["EVENT_LISTENER"]):
            return self._kernel(msg, it)
        if type_id == t["TTY"]:
            return self._tty(msg, it)
        return 0

    # -- the decision ----------------------------------------------------------------------
    def match_lines(self, sec: int, serial: int, lines: Sequence[bytes]) -> bool:
        """Does the event made of these raw lines match? (``sec``/``serial`` of the event)"""
        c = self.criteria
        if c.start is not None and sec < c.start:
            return False
        if c.end is not None and sec > c.end:
            return False
        if c.event_id is not None and serial != c.event_id:
            return False
        types = self._types
        prefixes = self._type_prefixes
        if prefixes is not None and not any(
            line.startswith(prefixes) or not line.startswith(b"type=") for line in lines
        ):
            return False
        if self._cannot_match(lines):
            return False
        parsed = [_split_line(line) for line in lines]
        if types is not None and not any(p[0] in types for p in parsed):
            return False
        if any(p[2] for p in parsed):
            return self._match_interpreted(lines)
        it = _Items()
        for type_id, msg, _interp in parsed:
            if self._record(msg, type_id, it):
                return False
        return self._compare(it)

    def _cannot_match(self, lines: Sequence[bytes]) -> bool:
        """A cheap, exact rejection before the full extraction: a quoted value holds the
        searched string only if the line does, and a number only if its digits appear.
        Values written in hex (or as words like ``(null)``) are decoded, so a line with
        any unquoted value of that field keeps the event in the running."""
        for needle, field, quoted in self._literals:
            for line in lines:
                if needle in line or line.count(field) != line.count(quoted):
                    break
            else:
                return True
        pid = self._pid_digits
        return pid is not None and not any(pid in line for line in lines)

    def _compare(self, it: _Items) -> bool:
        c = self.criteria
        if c.pid is not None and it.pid != c.pid:
            return False
        if c.success is not None and it.success != (_SUCCESS if c.success else _FAILED):
            return False
        if self._exe is not None and (it.exe is None or not self._strmatch(self._exe, it.exe)):
            return False
        if self._comm is not None and (it.comm is None or not self._strmatch(self._comm, it.comm)):
            return False
        key = self._key
        return key is None or bool(it.keys and any(self._strmatch(key, k) for k in it.keys))

    def _match_interpreted(self, lines: Sequence[bytes]) -> bool:
        """Records pasted from ``ausearch -i``: match the interpreted values directly."""
        from svirt.audit.records import parse_fields

        it = _Items()
        for line in lines:
            rec = parse_record(line)
            if isinstance(rec, str):
                continue
            f = parse_fields(rec.body.decode("utf-8", "replace"))
            if "pid" in f and f["pid"].isdigit():
                it.pid = int(f["pid"])
            for name in ("comm", "exe"):
                if name in f:
                    setattr(it, name, f[name].encode())
            if "key" in f:
                it.keys = [*(it.keys or []), f["key"].encode()]
            if "success" in f:
                it.success = _SUCCESS if f["success"] == "yes" else _FAILED
            elif "res" in f:
                it.success = _SUCCESS if f["res"] in ("success", "yes", "1") else _FAILED
            elif "avc" in f:
                it.success = _FAILED if f["avc"] == "denied" else _SUCCESS
        return self._compare(it)


_DAEMON1 = frozenset(
    _T[n]
    for n in (
        "DAEMON_START",
        "DAEMON_END",
        "DAEMON_ABORT",
        "DAEMON_CONFIG",
        "DAEMON_ROTATE",
        "DAEMON_RESUME",
    )
)


def _split_line(line: bytes) -> tuple[int, bytes, bool]:
    """(type id, the record without the enriched part, pasted-interpreted?)."""
    sep = line.find(b"\x1d")
    msg = line if sep < 0 else line[:sep]
    pos = 0
    if msg.startswith(b"node="):
        pos = msg.find(b" ") + 1
    if msg.startswith(b"type=", pos):
        sp = msg.find(b" ", pos)
        name = msg[pos + 5 : sp] if sp > 0 else b""
        tid = _BYTES_NAME_TO_ID.get(name)
        if tid is None:
            tid = msg_type_id(name.decode("ascii", "replace"))
        stamp_at = sp + 11
        interpreted = msg.find(b"/", stamp_at, stamp_at + 12) >= 0
        return tid, msg, interpreted
    rec = parse_record(line)
    if isinstance(rec, str):
        return -1, msg, False
    return rec.type_id, msg, rec.interpreted


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


def _chunks(fh: BinaryIO, stats: ReadStats, source: str) -> Iterator[list[bytes]]:
    """Lists of complete lines; an over-long line is counted and skipped."""
    rest = b""
    skipping = False
    lineno = 0
    while True:
        try:
            chunk = fh.read(CHUNK_SIZE)
        except (OSError, EOFError) as exc:
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
            stats.note_malformed(source, lineno + len(lines) + 1, "line too long")
            rest = b""
            skipping = True
        lineno += len(lines)
        yield lines
    if rest and not skipping:
        yield [rest]


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
            for lines in _chunks(fh, stats, inp.path):
                for line in lines:
                    lineno += 1
                    at = offset
                    offset += len(line) + 1
                    if len(line) > MAX_LINE:
                        stats.note_malformed(inp.path, lineno, "line too long")
                        continue
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
                        if line.strip() and not line.lstrip().startswith((b"----", b"time->")):
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
                    tid = _T["SYSCALL"] if rec.interpreted else rec.type_id
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
) -> Iterator[Event]:
    """Matching events from the inputs, in the order they complete.

    ``engine``: ``"exact"`` reads every line; ``"fast"`` scans for the records the
    criteria anchor on (message types, serial) and assembles only their events (see
    :mod:`svirt.audit.fastscan` for when the two can differ); ``"auto"`` picks fast when
    the criteria are anchored and the anchoring records are sparse.
    """
    stats = stats if stats is not None else ReadStats()
    if engine not in ("auto", "exact", "fast"):
        raise AuditError(f"unknown search engine '{engine}'")
    from svirt.audit.fastscan import prefer_fast, scan_fast

    if engine == "fast" or (engine == "auto" and prefer_fast(inputs, criteria)):
        return scan_fast(inputs, criteria, stats)
    return scan_exact(inputs, criteria, stats)
