"""``ausearch -i`` byte for byte: the record walk of ausearch 3.0.9, with libauparse's own
decoders.

ausearch does not decode values itself: for every ``name=value`` of a record it asks
libauparse (``auparse_interp_adjust_type`` then ``auparse_do_interpretation``, both
exported by ``libauparse.so.0``) with the record type, the machine (from ``arch=``), the
syscall number and the SYSCALL's ``a0``/``a1``, after loading the record's ENRICHED part
as the table of names (``_auparse_load_interpretations``). So every argument kind
ausearch decodes (open flags, modes, ``AT_FDCWD``, socket domains and types, signals,
ptrace requests, capabilities, ids as names, hex strings, ...) is decoded here by the
same code, through ctypes; this module only reproduces how ausearch walks the record
(``output_interpreted_node``: where a name starts, quoted values, the comma rule, the
``msg='`` of userspace records, multiple keys) and prints the result.

:func:`available` says whether libauparse could be loaded; without it
:mod:`svirt.audit.interpret` falls back to its own Python decoders (close to, but not
exactly, ausearch's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Any

__all__ = ["available", "interpret_line"]

_TYPE_UNCLASSIFIED = 0
_TYPE_TTY_DATA = 20
_TYPE_MAC_LABEL = 32
_ESC_TTY = 1
_SYSCALL = 1300
_SECCOMP = 1326
_KEY_SEPARATOR = b"\x01"


class _IData(ctypes.Structure):
    _fields_ = [
        ("machine", ctypes.c_uint),
        ("syscall", ctypes.c_int),
        ("a0", ctypes.c_ulonglong),
        ("a1", ctypes.c_ulonglong),
        ("cwd", ctypes.c_char_p),
        ("name", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
    ]


class _Lib:
    def __init__(self) -> None:
        au = ctypes.CDLL(ctypes.util.find_library("auparse") or "libauparse.so.0")
        audit = ctypes.CDLL(ctypes.util.find_library("audit") or "libaudit.so.1")
        libc = ctypes.CDLL(None)
        self.adjust = au.auparse_interp_adjust_type
        self.adjust.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
        self.adjust.restype = ctypes.c_int
        self.do = au.auparse_do_interpretation
        self.do.argtypes = [ctypes.c_int, ctypes.POINTER(_IData), ctypes.c_int]
        self.do.restype = ctypes.c_void_p
        self.load = au._auparse_load_interpretations
        self.load.argtypes = [ctypes.c_char_p]
        self.load.restype = None
        self.unload = au._auparse_free_interpretations
        self.unload.argtypes = []
        self.unload.restype = None
        self.elf_to_machine = audit.audit_elf_to_machine
        self.elf_to_machine.argtypes = [ctypes.c_uint]
        self.elf_to_machine.restype = ctypes.c_int
        self.detect_machine = audit.audit_detect_machine
        self.detect_machine.argtypes = []
        self.detect_machine.restype = ctypes.c_int
        self.free = libc.free
        self.free.argtypes = [ctypes.c_void_p]
        self.free.restype = None


_lib: _Lib | None = None
_tried = False
# ausearch keeps the last SYSCALL's a0/a1 in globals across records and events.
_state: dict[str, Any] = {"a0": 0, "a1": 0}


def available() -> bool:
    """Can libauparse (and libaudit) be used? Loaded on first call."""
    global _lib, _tried
    if not _tried:
        _tried = True
        try:
            _lib = _Lib()
        except (OSError, AttributeError):
            _lib = None
    return _lib is not None


def _strtoul(text: bytes, base: int) -> int:
    text = text.lstrip(b" \t")
    digits = b"0123456789abcdefABCDEF"[: 10 if base == 10 else 22]
    end = 0
    if base == 16 and text[:2] in (b"0x", b"0X"):
        text = text[2:]
    while end < len(text) and text[end] in digits:
        end += 1
    return int(text[:end], base) if end else 0


def _arg(msg: bytes, name: bytes) -> int:
    i = msg.find(b" " + name + b"=")
    if i < 0:
        return 0
    return _strtoul(msg[i + len(name) + 2 :], 16) & 0xFFFFFFFFFFFFFFFF


# Memoised answers of libauparse (pure functions of their inputs, the ENRICHED names of the
# record included); cleared when large. ctypes calls cost microseconds, a dict hit less.
_CACHE_MAX = 1 << 17
_adjust_cache: dict[tuple[int, bytes, bytes], int] = {}
_text_cache: dict[tuple[Any, ...], bytes] = {}
_ARGS = frozenset({b"a0", b"a1", b"a2", b"a3"})


def _adjust(lib: _Lib, rtype: int, name: bytes, val: bytes) -> int:
    key = (rtype, name, val)
    found = _adjust_cache.get(key)
    if found is None:
        if len(_adjust_cache) > _CACHE_MAX:
            _adjust_cache.clear()
        found = _adjust_cache[key] = lib.adjust(rtype, name, val)
    return found


class _Walk:
    __slots__ = ("cur_syscall", "interp", "lib", "machine", "out", "rtype")

    def __init__(self, lib: _Lib, rtype: int, interp: bytes | None = None) -> None:
        self.lib = lib
        self.rtype = rtype
        self.interp = interp
        self.machine = -1
        self.cur_syscall = -1
        self.out: list[bytes] = []

    def interpret(self, name: bytes, val: bytes, comma: bool) -> None:
        lib = self.lib
        name = name.lstrip(b" (")
        if name == b"acct" and val.endswith(b":"):
            val = val[:-1]
        ftype = _adjust(lib, self.rtype, name, val)
        if self.rtype in (_SYSCALL, _SECCOMP):
            if self.machine == -1:
                self.machine = lib.detect_machine()
            if name == b"arch":
                self.machine = lib.elf_to_machine(_strtoul(val, 16) & 0xFFFFFFFF)
            if self.cur_syscall < 0 and name == b"syscall":
                self.cur_syscall = _strtoul(val, 10)
            syscall = self.cur_syscall
        else:
            syscall = 0
        args = (_state["a0"], _state["a1"]) if name in _ARGS else None
        key = (ftype, name, val, self.machine, syscall, args, self.interp)
        cached = _text_cache.get(key)
        if cached is None:
            idata = _IData()
            idata.syscall = syscall
            idata.machine = self.machine & 0xFFFFFFFF
            idata.a0 = _state["a0"]
            idata.a1 = _state["a1"]
            idata.cwd = None
            idata.name = name
            idata.val = val
            ptr = lib.do(ftype, ctypes.byref(idata), _ESC_TTY)
            cached = ctypes.string_at(ptr) if ptr else b""
            if ptr:
                lib.free(ptr)
            if len(_text_cache) > _CACHE_MAX:
                _text_cache.clear()
            _text_cache[key] = cached
        text = cached
        out = self.out
        if ftype == _TYPE_UNCLASSIFIED:
            out.append(val + (b"," if comma else b" "))
        elif name == b"key":
            parts = text.split(_KEY_SEPARATOR)
            if len(parts) == 1:
                out.append(text + b" ")
            else:
                out.append(parts[0])
                for p in parts[1:-1]:
                    out.append(b" key=" + p)
                out.append(b" key=" + parts[-1] + b" ")
        elif ftype == _TYPE_TTY_DATA:
            out.append(text)
        else:
            out.append(text + b" ")


def interpret_line(
    msg: bytes,
    rtype: int,
    type_name: str | None,
    sec: int,
    milli: int,
    serial: int,
    node: str | None,
    interp: bytes | None,
) -> bytes | None:
    """One record as ``ausearch -i`` prints it, newline included. ``msg`` is the record
    without its ENRICHED part (node prefix included); ``sec``/``milli``/``serial`` are the
    event's. None when libauparse is not available or the line has no time stamp."""
    if not available():
        return None
    lib = _lib
    assert lib is not None
    s = msg
    end = len(s)
    pos = 0
    if node is not None:
        sp = s.find(b" ")
        if sp >= 0:
            pos = sp + 1
    lp = s.find(b"(", pos)
    if lp < 0:
        return None
    w = _Walk(lib, rtype, interp)
    out = w.out
    if node is not None:
        out.append(b"node=" + node.encode("utf-8", "surrogateescape") + b" ")
    if type_name is not None:
        out.append(b"type=" + type_name.encode() + b" msg=audit(")
    else:
        out.append(s[pos:lp] + b"(")
    rp = s.find(b")", lp + 1)
    if rp < 0:
        return b"".join(out)
    try:
        stamp = time.strftime("%x %T", time.localtime(sec))
    except (OverflowError, OSError, ValueError):
        stamp = str(sec)
    out.append(f"{stamp}.{milli:03d}:{serial}) ".encode())
    if rtype == _SYSCALL:
        _state["a0"] = _arg(s, b"a0")
        _state["a1"] = _arg(s, b"a1")
    if interp is not None:
        lib.load(interp)
    try:
        i: int | None = rp + 1
        found = False
        comma = False
        eq = -1
        while i is not None and i < end:
            eq = s.find(b"=", i, end)
            if eq < 0:
                break
            comma = False
            found = True
            n = eq
            while s[n] != 32 and n > i:
                n -= 1
            out.append(s[i:eq] + b"=")
            name = s[n:eq]
            ptr = eq + 1
            if name == b"msg":
                i = ptr
                continue
            if name[:1] == b"'":
                name = name[1:]
            if ptr < end and s[ptr] in (34, 39):
                q = s.find(s[ptr : ptr + 1], ptr + 1, end)
                if q >= 0:
                    after = q + 1
                    if after < end:
                        val = s[ptr:after]
                        i = after + 1
                    else:
                        val = s[ptr:end]
                        i = end
                else:
                    val = s[ptr:end]
                    i = None
            else:
                c = s.find(b",", ptr, end)
                sp = s.find(b" ", ptr, end)
                if c >= 0 and sp >= 0 and c < sp:
                    if _adjust(lib, rtype, name, s[sp:end]) == _TYPE_MAC_LABEL:
                        val, i = s[ptr:sp], sp + 1
                    else:
                        val, i, comma = s[ptr:c], c + 1, True
                elif c >= 0 and sp < 0:
                    if _adjust(lib, rtype, name, s[ptr:end]) == _TYPE_MAC_LABEL:
                        val, i = s[ptr:end], None
                    else:
                        val, i, comma = s[ptr:c], c + 1, True
                elif sp >= 0:
                    val, i = s[ptr:sp], sp + 1
                else:
                    val, i = s[ptr:end], None
            w.interpret(name, val, comma)
    finally:
        if interp is not None:
            lib.unload()
    # nothing to interpret, or a value cut at a comma: the rest as it is
    if i is not None and ((not found and eq < 0) or comma):
        out.append(s[i:end])
    out.append(b"\n")
    return b"".join(out)
