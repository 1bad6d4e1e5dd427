"""ausearch's matching: which items an event yields, record by record, and the decision.

ausearch (``ausearch-parse.c``) takes each searchable item from specific record kinds, in
record order, with its own rules: a SYSCALL record's comm overrides the AVC's, a SYSCALL
or AVC without a field ausearch requires makes the whole event unmatchable, a userspace
record's exe is looked for only after its ``acct=``, ``res=1`` is success in kernel
records and ``res=success`` in userspace ones, and so on. :class:`Matcher` reproduces
those rules for the criteria svirt supports, on the raw lines of an event, so both search
engines return exactly the events ausearch returns.
"""

from __future__ import annotations

import pwd
from collections.abc import Sequence
from typing import TYPE_CHECKING

from svirt.audit.reader import _BYTES_NAME_TO_ID, msg_type_id, msg_type_name, parse_record

if TYPE_CHECKING:
    from svirt.audit.search import SearchCriteria

__all__ = ["Matcher", "split_line"]

# Success values as ausearch stores them (success_t).
_UNSET, _FAILED, _SUCCESS = -1, 0, 1
# ausearch's "not given" values of its uid_t/gid_t options and items: -1, and -2 for the
# login uid (so ``-ui 4294967295`` filters nothing, while ``-ul -1`` finds unset auids).
_U32 = 0xFFFFFFFF
_ID_UNSET = 0xFFFFFFFF
_AUID_UNSET = 0xFFFFFFFE

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
        "ADD_GROUP",
        "DEL_GROUP",
        "GRP_MGMT",
    )
}


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


def strtoll0(text: bytes) -> int:
    """strtoll(text, NULL, 0): sign, then 0x hex, 0 octal or decimal, up to a non-digit."""
    t = text.lstrip(b" \t")
    neg = t[:1] == b"-"
    if t[:1] in (b"-", b"+"):
        t = t[1:]
    base, digits = 10, b"0123456789"
    if t[:2].lower() == b"0x" and t[2:3] and t[2:3].lower() in b"0123456789abcdef":
        base, digits, t = 16, b"0123456789abcdef", t[2:]
    elif t[:1] == b"0":
        base, digits = 8, b"01234567"
    n = 0
    while n < len(t) and t[n : n + 1].lower() in digits:
        n += 1
    v = int(t[:n], base) if n else 0
    return -v if neg else v


def _hex_at(msg: bytes, pos: int) -> int:
    """strtoul(…, 16) of an arch value."""
    end = pos
    n = len(msg)
    while end < n and msg[end : end + 1] in b"0123456789abcdefABCDEF" and msg[end] != 32:
        end += 1
    return int(msg[pos:end], 16) if end > pos else 0


def _id_at(msg: bytes, pos: int) -> int:
    """strtoul() of a uid/gid value, stored in a 32-bit uid_t as ausearch stores it."""
    n = len(msg)
    while pos < n and msg[pos] in b" \t":
        pos += 1
    neg = pos < n and msg[pos] == 45
    if pos < n and msg[pos] in b"+-":
        pos += 1
    v = _strtoul(msg, pos)
    return (-v if neg else v) & _U32


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
    __slots__ = (
        "arch",
        "comm",
        "egid",
        "euid",
        "exe",
        "exit",
        "gid",
        "keys",
        "loginuid",
        "pid",
        "success",
        "syscall",
        "tauid",
        "teuid",
        "tuid",
        "uid",
        "uid_set",
    )

    def __init__(self) -> None:
        self.pid = -1
        self.uid = _ID_UNSET
        self.euid = _ID_UNSET
        self.gid = _ID_UNSET
        self.egid = _ID_UNSET
        self.loginuid = _AUID_UNSET
        self.uid_set = False
        # the names ausearch's lookup_uid() gives (compared when a name was asked for)
        self.tuid: str | None = None
        self.teuid: str | None = None
        self.tauid: str | None = None
        self.comm: bytes | None = None
        self.exe: bytes | None = None
        self.keys: list[bytes] | None = None
        self.success = _UNSET
        # ausearch's search_items: syscall and arch start at 0 (a record without them)
        self.syscall = 0
        self.arch = 0
        self.exit: int | None = None


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
        self.want_syscall = c.syscall is not None
        self.want_exit = c.exit is not None
        self.ev_uid = _ID_UNSET if c.uid is None else c.uid & _U32
        self.ev_euid = _ID_UNSET if c.euid is None else c.euid & _U32
        self.ev_auid = _AUID_UNSET if c.loginuid is None else c.loginuid & _U32
        self.ev_gid = _ID_UNSET if c.gid is None else c.gid & _U32
        self.ev_egid = _ID_UNSET if c.egid is None else c.egid & _U32
        self.names = (c.uid_name, c.euid_name, c.loginuid_name)
        self.want_names = any(n is not None for n in self.names)
        self.want_uid = self.ev_uid != _ID_UNSET or c.uid_name is not None
        self.want_euid = self.ev_euid != _ID_UNSET or c.euid_name is not None
        self.want_auid = self.ev_auid != _AUID_UNSET or c.loginuid_name is not None
        self._interp: dict[bytes, str] = {}
        self._pw_cache: dict[int, str | None] = {}
        self.want_gid = self.ev_gid != _ID_UNSET
        self.want_egid = self.ev_egid != _ID_UNSET
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

    # -- ausearch's lookup_uid(): the enriched name of the event's first record, else ----
    def _lookup(self, field: bytes, uid: int) -> str | None:
        """root/unset or this machine's passwd name (only when a name is searched)"""
        if not self.want_names:
            return None
        if field in self._interp:
            return self._interp[field]
        if uid == 0:
            return "root"
        if uid == _ID_UNSET:
            return "unset"
        if uid not in self._pw_cache:
            try:
                self._pw_cache[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._pw_cache[uid] = None
        return self._pw_cache[uid]

    def _set_uid(self, it: _Items, uid: int) -> None:
        it.uid, it.uid_set = uid, True
        it.tuid = self._lookup(b"uid", uid)

    def _set_auid(self, it: _Items, auid: int) -> None:
        it.loginuid = auid
        it.tauid = self._lookup(b"auid", auid)

    def _load_interpretations(self, lines: Sequence[bytes], first_type: int) -> None:
        """ausearch loads the enriched part of a one-record event, or of its SYSCALL
        record when that comes first, for the names it compares."""
        self._interp = {}
        if not self.want_names or not (len(lines) == 1 or first_type == _T["SYSCALL"]):
            return
        line = lines[0]
        sep = line.find(b"\x1d")
        if sep < 0:
            return
        for token in line[sep + 1 :].split():
            name, eq, value = token.partition(b"=")
            if eq:
                self._interp[name.lower()] = value.strip(b'"').decode("utf-8", "replace")

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
        if self.want_auid:
            i = msg.find(b"auid=", term)
            if i < 0:
                i = msg.find(b"loginuid=", term)
                if i < 0:
                    return 19
                ptr = i + 9
            else:
                ptr = i + 5
            term = msg.find(b" ", ptr)
            if term < 0:
                return 20
            self._set_auid(it, _id_at(msg, ptr))
        if self.want_uid:
            i = msg.find(b"uid=", term)
            while i > 0 and msg[i - 1] == 97:  # 'a': auid, look again
                term = i + 1
                i = msg.find(b"uid=", term)
            if i < 0:
                return 22
            term = msg.find(b" ", i + 4)
            if term < 0:
                return 23
            self._set_uid(it, _id_at(msg, i + 4))
        for want, name, rc_absent, attr in (
            (self.want_gid, b"gid=", 25, "gid"),
            (self.want_euid, b"euid=", 28, "euid"),
            (self.want_egid, b"egid=", 31, "egid"),
        ):
            if want:
                i = msg.find(name, term)
                if i < 0:
                    return rc_absent
                term = msg.find(b" ", i + len(name))
                if term < 0:
                    return rc_absent + 1
                setattr(it, attr, _id_at(msg, i + len(name)))
                if attr == "euid":
                    it.teuid = self._lookup(b"euid", it.euid)
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
        i = msg.find(b"arch=")
        if i >= 0:
            it.arch = _hex_at(msg, i + 5)
        i = msg.find(b"syscall=")
        if i < 0:
            return 4
        term = msg.find(b" ", i + 8)
        if term < 0:
            return 5
        it.syscall = _strtoul(msg, i + 8)
        if self.want_success:
            i = msg.find(b"success=", term)
            if i >= 0:
                sp = msg.find(b" ", i + 8)
                if sp < 0:
                    return 7
                it.success = _SUCCESS if msg[i + 8 : sp] == b"yes" else _FAILED
                term = sp
        if self.want_exit:
            # looked for after success= when that is wanted too, as ausearch does
            i = msg.find(b"exit=", term)
            if i < 0:
                return 8
            sp = msg.find(b" ", i + 5)
            if sp < 0:
                return 9
            it.exit = strtoll0(msg[i + 5 : sp])
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

    def _user(self, msg: bytes, type_id: int, it: _Items) -> int:
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
        if self.want_uid:
            i = msg.find(b"uid=", term)
            if i < 0:
                return 4
            term = msg.find(b" ", i + 4)
            if term < 0:
                return 5
            self._set_uid(it, _id_at(msg, i + 4))
        if self.want_auid:
            i = msg.find(b"auid=", term)
            if i < 0:
                i = msg.find(b"loginuid=", term)
                if i < 0:
                    return 7
                ptr = i + 9
            else:
                ptr = i + 5
            term = msg.find(b" ", ptr)
            if term < 0:
                return 8
            self._set_auid(it, _id_at(msg, ptr))
        if self.want_gid and type_id in _GROUP_TYPES:
            i = msg.find(b" id=", term)
            if i < 0 and type_id == _T["GRP_MGMT"]:
                i = msg.find(b"gid=", term)
            if i >= 0:
                term = msg.find(b" ", i + 4)
                if term < 0:
                    return 31
                it.gid = _id_at(msg, i + 4)
        if self.want_uid:
            # ausearch's second look for a uid (USER_LOGIN's uid= inside msg='...')
            i = msg.find(b"uid=", term)
            while i > 0 and msg[i - 1] == 97:  # 'a': auid, look again
                term = i + 1
                i = msg.find(b"uid=", term)
            if i >= 0 and msg[i - 1 : i] not in (b"s", b"u"):
                if msg[i - 1 : i] not in (b"'", b" "):
                    return 25
                ptr = i + 4
                term = ptr
                while term < n and 48 <= msg[term] <= 57:
                    term += 1
                if term == ptr:
                    return 14
                self._set_uid(it, _strtoul(msg, ptr) & _U32)
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
            rc = self._user(msg, type_id, it)
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
        if self.want_uid:
            i = msg.find(b"uid=", term)
            if i < 0:
                return 4
            term = msg.find(b" ", i + 4)
            if term < 0:
                return 5
            self._set_uid(it, _id_at(msg, i + 4))
        if self.want_auid:
            i = msg.find(b"new auid=", term)
            ptr = i + 9
            if i < 0:
                i = msg.find(b" auid=", term)
                ptr = i + 6
                if i < 0:
                    i = msg.find(b"new loginuid=", term)
                    ptr = i + 13
                    if i < 0:
                        return 7
            term = msg.find(b" ", ptr)
            self._set_auid(it, _id_at(msg, ptr))
            if term < 0:
                term = 0
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
        term = mptr
        if self.want_auid:
            i = msg.find(b"auid=", mptr)
            if i < 0:
                return 1
            term = msg.find(b" ", i + 5)
            if term < 0:
                return 2
            self._set_auid(it, _id_at(msg, i + 5))
        if self.want_pid:
            i = msg.find(b"pid=", term)
            if i < 0:
                return 4
            term = msg.find(b" ", i + 4)
            if term < 0:
                return 5
            it.pid = _strtoul(msg, i + 4)
        if self.want_uid:
            i = msg.find(b" uid=", term)
            if i >= 0:
                sp = msg.find(b" ", i + 5)
                if sp < 0:
                    return 7
                it.uid, it.uid_set = _id_at(msg, i + 5), True  # no name looked up here
                term = sp
        if self.want_success:
            return self._res_word(msg, mptr, it)
        return 0

    def _daemon2(self, msg: bytes, it: _Items) -> int:
        if self.want_success:
            return 2 if self._res_word(msg, 0, it) else 0
        return 0

    def _simple(self, msg: bytes, type_id: int, it: _Items) -> int:
        term = 0
        if self.want_auid:
            i = msg.find(b"auid=")
            if i < 0 and type_id != _T["CONFIG_CHANGE"]:
                return 1
            if i >= 0:
                sp = msg.find(b" ", i + 5)
                self._set_auid(it, _id_at(msg, i + 5))
                term = sp if sp >= 0 else i + 5
        if self.want_key:
            i = msg.find(b"key=", term)
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
        term = 0
        if self.want_auid:
            i = msg.find(b"auid=")
            if i < 0:
                return 1
            sp = msg.find(b" ", i + 5)
            self._set_auid(it, _id_at(msg, i + 5))
            term = sp if sp >= 0 else i + 5
        for want, name, rc in ((self.want_uid, b"uid=", 3), (self.want_gid, b"gid=", 5)):
            if want:
                i = msg.find(name, term)
                if i >= 0:
                    term = msg.find(b" ", i + 4)
                    if term < 0:
                        return rc
                    if name == b"uid=":
                        self._set_uid(it, _id_at(msg, i + 4))
                    else:
                        it.gid = _id_at(msg, i + 4)
        if type_id == _T["ANOM_PROMISCUOUS"]:
            return 0
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
            it.arch = _hex_at(msg, i + 5)
            i = msg.find(b"syscall=", term)
            if i < 0:
                return 17
            term = msg.find(b" ", i + 8)
            if term < 0:
                return 18
            it.syscall = _strtoul(msg, i + 8)
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
        if self.want_uid:
            i = msg.find(b" uid=", term)
            if i >= 0:
                # ausearch reads from the '=' here, so the uid is always 0
                term = msg.find(b" ", i + 4)
                if term < 0:
                    return 3
                self._set_uid(it, _id_at(msg, i + 4))
        if self.want_auid:
            i = msg.find(b"auid=")
            if i >= 0:
                term = msg.find(b" ", i + 5)
                if term < 0:
                    return 5
                self._set_auid(it, _id_at(msg, i + 5))
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
        if self.want_uid:
            i = msg.find(b" uid=", term)
            if i >= 0:
                # ausearch reads from the '=' here, so the uid is always 0
                term = msg.find(b" ", i + 4)
                if term < 0:
                    return 3
                self._set_uid(it, _id_at(msg, i + 4))
        if self.want_auid:
            i = msg.find(b"auid=", term)
            if i < 0:
                return 5
            sp = msg.find(b" ", i + 5)
            self._set_auid(it, _id_at(msg, i + 5))
            term = sp if sp >= 0 else i + 5
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
        if self.want_uid and not it.uid_set:
            i = msg.find(b"uid=", term)
            if i >= 0:
                term = msg.find(b" ", i + 4)
                if term < 0:
                    return 55
                self._set_uid(it, _id_at(msg, i + 4))
            else:
                self._set_uid(it, 0)
        if self.want_auid and it.loginuid == _AUID_UNSET:
            i = msg.find(b"auid=", term)
            if i >= 0:
                term = msg.find(b" ", i + 5)
                if term < 0:
                    return 57
                self._set_auid(it, _id_at(msg, i + 5))
            else:
                self._set_auid(it, _ID_UNSET)
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
            return self._user(msg, type_id, it)
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
        parsed = [split_line(line) for line in lines]
        if types is not None and not any(p[0] in types for p in parsed):
            return False
        if any(p[2] for p in parsed):
            return self._match_interpreted(lines)
        it = _Items()
        self._load_interpretations(lines, parsed[0][0])
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

    def _ids_match(self, it: _Items) -> bool:
        """ausearch's user_match() and group_match(): -ua/-ga are an "or", else "and"."""
        c = self.criteria
        if self.want_names:
            wanted = zip(self.names, (it.tuid, it.teuid, it.tauid), strict=True)
            if c.uid_all:
                if not any(n is not None and n == got for n, got in wanted):
                    return False
            elif any(n is not None and n != got for n, got in wanted):
                return False
        elif c.uid_all:
            if not (
                self.ev_uid == it.uid or self.ev_euid == it.euid or self.ev_auid == it.loginuid
            ):
                return False
        elif (
            (self.want_uid and self.ev_uid != it.uid)
            or (self.want_euid and self.ev_euid != it.euid)
            or (self.want_auid and self.ev_auid != it.loginuid)
        ):
            return False
        if c.gid_all:
            return self.ev_gid == it.gid or self.ev_egid == it.egid
        return not (
            (self.want_gid and self.ev_gid != it.gid)
            or (self.want_egid and self.ev_egid != it.egid)
        )

    def _compare(self, it: _Items) -> bool:
        c = self.criteria
        if not self._ids_match(it):
            return False
        if c.pid is not None and it.pid != c.pid:
            return False
        if c.success is not None and it.success != (_SUCCESS if c.success else _FAILED):
            return False
        # -sc: a name given is looked up for this machine and the record's arch must match
        if c.exit is not None and it.exit != c.exit:
            return False
        if c.syscall is not None and (
            it.syscall != c.syscall or (c.syscall_arch and it.arch != c.syscall_arch)
        ):
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
            for name, attr in (
                ("uid", "uid"),
                ("euid", "euid"),
                ("auid", "loginuid"),
                ("gid", "gid"),
                ("egid", "egid"),
            ):
                if name in f:
                    setattr(it, attr, _id_at(f[name].encode(), 0))
            # ausearch -i shows user names: compare them as the names they are
            it.tuid, it.teuid, it.tauid = f.get("uid"), f.get("euid"), f.get("auid")
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
            if "exit" in f and self.want_exit and rec.type_id == _T["SYSCALL"]:
                it.exit = _interpreted_exit(f["exit"])
            if "arch" in f and "syscall" in f:
                _interpreted_syscall(f["arch"], f["syscall"], it)
        return self._compare(it)


_GROUP_TYPES = frozenset((_T["ADD_GROUP"], _T["DEL_GROUP"], _T["GRP_MGMT"]))

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


def _interpreted_exit(value: str) -> int:
    """``exit=ENOENT(No such file or directory)`` as ``ausearch -i`` shows a failure."""
    import errno

    name = value.split("(", 1)[0]
    if name[:1].isalpha():
        return -int(getattr(errno, name, 0))
    return strtoll0(name.encode())


def _interpreted_syscall(arch: str, syscall: str, it: _Items) -> None:
    """``arch=x86_64 syscall=openat`` as ``ausearch -i`` shows them, back to numbers."""
    from svirt.audit._tables import ARCHES, SYSCALLS

    try:
        it.arch = int(arch, 16)
    except ValueError:
        it.arch = next((a for a, m in ARCHES.items() if m == arch), 0)
    if syscall.isdigit():
        it.syscall = int(syscall)
        return
    table = SYSCALLS.get(ARCHES.get(it.arch, ""), {})
    it.syscall = next((n for n, name in table.items() if name == syscall), 0)


def split_line(line: bytes) -> tuple[int, bytes, bool]:
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
