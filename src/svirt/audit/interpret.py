"""Turning records into what people read: ausearch's output formats, and JSON.

:func:`format_event` prints an event the way ``ausearch`` does: ``--raw`` the lines as
logged (enriched part included), the default form a ``----`` separator, a ``time->``
line and the records newest-first without the enriched part, and ``-i`` the same with
every value interpreted as auparse interprets it (syscall and errno names, open flags,
file modes, hex strings decoded, ids as names). Names for ids come from the ENRICHED part
of the record first (the names on the host that logged it), then from this host.
"""

from __future__ import annotations

import errno as _errno
import grp
import os
import pwd
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from svirt.audit._tables import ARCHES, MSG_TYPES, SYSCALLS
from svirt.audit.events import Event
from svirt.audit.reader import Record
from svirt.audit.records import HEX_FIELDS, decode_hex, field_pairs, parse_enriched

__all__ = [
    "arch_name",
    "errno_name",
    "event_to_dict",
    "format_event",
    "interpret_record",
    "syscall_name",
]

_UNSET = 4294967295
_UID_FIELDS = frozenset(
    {
        "auid",
        "uid",
        "euid",
        "suid",
        "fsuid",
        "ouid",
        "oauid",
        "old-auid",
        "iuid",
        "sauid",
        "loginuid",
        "new-auid",
        "old-uid",
        "new-uid",
        "obj_uid",
        "inode_uid",
    }
)
_GID_FIELDS = frozenset(
    {"gid", "egid", "sgid", "fsgid", "ogid", "igid", "new-gid", "old-gid", "obj_gid", "inode_gid"}
)
_CAPS = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
]
_CAP_FIELDS = frozenset(
    {
        "cap_fp",
        "cap_fi",
        "cap_pp",
        "cap_pi",
        "cap_pe",
        "cap_pa",
        "cap_bp",
        "old_pp",
        "old_pi",
        "old_pe",
        "old_pa",
        "new_pp",
        "new_pi",
        "new_pe",
        "new_pa",
        "pp",
        "pi",
        "pe",
        "pa",
    }
)
_OPEN_ACCESS = ("O_RDONLY", "O_WRONLY", "O_RDWR")
_OPEN_FLAGS = (
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o4010000, "O_SYNC"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
    (0o20200000, "O_TMPFILE"),
)
_FILE_TYPES = {
    0o140000: "socket",
    0o120000: "link",
    0o100000: "file",
    0o060000: "block",
    0o040000: "dir",
    0o020000: "character",
    0o010000: "fifo",
}
_BPF_CMDS = [
    "BPF_MAP_CREATE",
    "BPF_MAP_LOOKUP_ELEM",
    "BPF_MAP_UPDATE_ELEM",
    "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY",
    "BPF_PROG_LOAD",
    "BPF_OBJ_PIN",
    "BPF_OBJ_GET",
    "BPF_PROG_ATTACH",
    "BPF_PROG_DETACH",
    "BPF_PROG_TEST_RUN",
    "BPF_PROG_GET_NEXT_ID",
    "BPF_MAP_GET_NEXT_ID",
    "BPF_PROG_GET_FD_BY_ID",
    "BPF_MAP_GET_FD_BY_ID",
    "BPF_OBJ_GET_INFO_BY_FD",
    "BPF_PROG_QUERY",
    "BPF_RAW_TRACEPOINT_OPEN",
    "BPF_BTF_LOAD",
    "BPF_BTF_GET_FD_BY_ID",
    "BPF_TASK_FD_QUERY",
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
    "BPF_MAP_FREEZE",
    "BPF_BTF_GET_NEXT_ID",
]
_SOCK_LEVELS = {
    0: "ip",
    1: "SOL_SOCKET",
    6: "tcp",
    17: "udp",
    41: "ipv6",
    255: "SOL_RAW",
    263: "SOL_PACKET",
    270: "SOL_NETLINK",
    280: "SOL_NFC",
}
_SO_NAMES = [
    "SO_DEBUG",
    "SO_REUSEADDR",
    "SO_TYPE",
    "SO_ERROR",
    "SO_DONTROUTE",
    "SO_BROADCAST",
    "SO_SNDBUF",
    "SO_RCVBUF",
    "SO_KEEPALIVE",
    "SO_OOBINLINE",
    "SO_NO_CHECK",
    "SO_PRIORITY",
    "SO_LINGER",
    "SO_BSDCOMPAT",
    "SO_REUSEPORT",
    "SO_PASSCRED",
    "SO_PEERCRED",
    "SO_RCVLOWAT",
    "SO_SNDLOWAT",
    "SO_RCVTIMEO",
    "SO_SNDTIMEO",
]
_SOCKOPTS = {
    0: {
        1: "IP_TOS",
        2: "IP_TTL",
        3: "IP_HDRINCL",
        4: "IP_OPTIONS",
        5: "IP_ROUTER_ALERT",
        6: "IP_RECVOPTS",
        7: "IP_RETOPTS",
        8: "IP_PKTINFO",
        64: "IPT_SO_SET_REPLACE",
        65: "IPT_SO_SET_ADD_COUNTERS",
    },
    1: {i + 1: name for i, name in enumerate(_SO_NAMES)},
    6: {1: "TCP_NODELAY"},
    17: {1: "UDP_CORK"},
    41: {64: "IP6T_SO_SET_REPLACE"},
}
_IOCTLS = {
    0x5401: "TCGETS",
    0x5402: "TCSETS",
    0x5403: "TCSETSW",
    0x5413: "TIOCGWINSZ",
    0x5414: "TIOCSWINSZ",
    0x541B: "TIOCINQ",
    0x5421: "FIONBIO",
    0x5422: "TIOCNOTTY",
    0x8933: "SIOCGIFINDEX",
    0x89A2: "SIOCBRADDIF",
    0x80045430: "TIOCGPTN",
}
_FAMILIES = {"0": "unspecified", "1": "local", "2": "ipv4", "3": "arp", "7": "bridge", "10": "ipv6"}
_LISTS = {
    "0": "user",
    "1": "task",
    "2": "entry",
    "3": "watch",
    "4": "exit",
    "5": "exclude",
    "6": "filesystem",
}
_SECCOMP = {
    0x00000000: "kill",
    0x80000000: "kill",
    0x00030000: "trap",
    0x00050000: "errno",
    0x7FC00000: "notify",
    0x7FF00000: "trace",
    0x7FFC0000: "log",
    0x7FFF0000: "allow",
}


def arch_name(value: str) -> str | None:
    """``c000003e`` -> ``x86_64``."""
    try:
        return ARCHES.get(int(value, 16))
    except ValueError:
        return None


def syscall_name(number: int, arch: str | None = "x86_64") -> str | None:
    table = SYSCALLS.get(arch or "x86_64") or SYSCALLS["x86_64"]
    return table.get(number)


def errno_name(number: int) -> str | None:
    return _errno.errorcode.get(number)


@cache
def _user_name(uid: int) -> str:
    if uid == _UNSET:
        return "unset"
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return f"unknown({uid})"


@cache
def _group_name(gid: int) -> str:
    if gid == _UNSET:
        return "unset"
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return f"unknown({gid})"


def _open_flags(value: int) -> str:
    parts = [_OPEN_ACCESS[value & 3] if (value & 3) < 3 else "O_ACCMODE"]
    for bit, name in _OPEN_FLAGS:
        if value & bit == bit:
            parts.append(name)
            value &= ~bit
    return "|".join(parts)


def _mode(value: str) -> str:
    try:
        mode = int(value, 8)
    except ValueError:
        return value
    kind = _FILE_TYPES.get(mode & 0o170000)
    parts = [kind] if kind else []
    if mode & 0o4000:
        parts.append("suid")
    if mode & 0o2000:
        parts.append("sgid")
    if mode & 0o1000:
        parts.append("sticky")
    parts.append(f"{mode & 0o777:o}")
    return ",".join(parts)


def _caps(value: str) -> str:
    try:
        bits = int(value, 16)
    except ValueError:
        return value
    if bits == 0:
        return "none"
    names = [name for i, name in enumerate(_CAPS) if bits & (1 << i)]
    return ",".join(names) if names else value


class _Context:
    __slots__ = ("arch", "args", "enriched", "syscall", "type")

    def __init__(self, rec: Record) -> None:
        self.type = rec.type
        self.enriched = parse_enriched(rec.interp)
        self.arch: str | None = None
        self.syscall: str | None = None
        self.args: dict[str, str] = {}


def _hex0x(value: str) -> str:
    return value if value.startswith("0x") else f"0x{value}"


def _syscall_arg(ctx: _Context, name: str, value: str) -> str:
    try:
        num = int(value, 16)
    except ValueError:
        return value
    call = ctx.syscall
    if call == "openat":
        if name == "a0" and num in (0xFFFFFF9C, 0xFFFFFFFFFFFFFF9C):
            return "AT_FDCWD"
        if name == "a2":
            return _open_flags(num)
    elif call == "open":
        if name == "a1":
            return _open_flags(num)
        if name == "a2":
            return f"0{num:o}"
    elif call == "bpf" and name == "a0":
        return _BPF_CMDS[num] if num < len(_BPF_CMDS) else f"unknown-bpf-cmd({num:x})"
    elif call in ("setsockopt", "getsockopt") and name in ("a1", "a2"):
        if name == "a1":
            return _SOCK_LEVELS.get(num, _hex0x(value))
        level = int(ctx.args.get("a1", "ffff"), 16) if ctx.args.get("a1", "").isalnum() else -1
        return _SOCKOPTS.get(level, {}).get(num, _hex0x(value))
    elif call == "ioctl" and name == "a1":
        return _IOCTLS.get(num, _hex0x(value))
    return _hex0x(value)


def _field(ctx: _Context, name: str, raw: str) -> str:
    """auparse's interpretation of one field's raw value."""
    unquoted = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else None
    if name in _UID_FIELDS or name in _GID_FIELDS:
        enriched = ctx.enriched.get(name)
        if enriched is not None:
            return enriched
        if raw == "n/a":
            return "unset"
        try:
            num = int(raw)
        except ValueError:
            return raw
        if num in (-1, _UNSET):
            return "unset"
        return _user_name(num) if name in _UID_FIELDS else _group_name(num)
    if name == "ses":
        return "unset" if raw in ("4294967295", "-1") else raw
    if name == "arch":
        return ctx.arch or arch_name(raw) or raw
    if name == "syscall":
        if ctx.type in ("SYSCALL", "SECCOMP"):
            return ctx.syscall or raw
        return raw
    if name == "exit" and ctx.type == "SYSCALL":
        try:
            code = int(raw)
        except ValueError:
            return raw
        if code < 0 and errno_name(-code):
            return f"{errno_name(-code)}({os.strerror(-code)})"
        return raw
    if name in ("a0", "a1", "a2", "a3") and ctx.type == "SYSCALL":
        return _syscall_arg(ctx, name, raw)
    if name == "mode" and ctx.type == "PATH":
        return _mode(raw)
    if name in _CAP_FIELDS:
        return _caps(raw)
    if name == "res" and raw in ("0", "1"):
        return "yes" if raw == "1" else "no"
    if name in ("prom", "old_prom"):
        return "yes" if raw not in ("0",) else "no"
    if name == "family" and ctx.type == "NETFILTER_CFG":
        return _FAMILIES.get(raw, raw)
    if name == "list" and ctx.type == "CONFIG_CHANGE":
        return _LISTS.get(raw, raw)
    if name == "sig" and raw.isdigit():
        sig = int(raw)
        if sig == 0:
            return "SIG0"
        try:
            return signal.Signals(sig).name
        except ValueError:
            return raw
    if name == "code" and ctx.type == "SECCOMP":
        try:
            return _SECCOMP.get(int(raw, 16) & 0xFFFF0000, raw)
        except ValueError:
            return raw
    if name == "proctitle":
        if unquoted is not None:
            return unquoted
        decoded = decode_hex(raw)
        return decoded.replace("\0", " ") if decoded is not None else raw
    if (name in HEX_FIELDS and name != "dev") or (ctx.type == "EXECVE" and name[:1] == "a"):
        if unquoted is not None:
            return unquoted
        if raw.startswith("("):
            return raw
        decoded = decode_hex(raw)
        if decoded is not None:
            return decoded.replace("\x01", " key=") if name == "key" else decoded
        return raw
    if name in ("vm", "old-disk", "new-disk", "acct", "exe", "cmd", "cwd") and unquoted is not None:
        return unquoted
    return raw


def _interpret_body(ctx: _Context, body: str) -> str:
    """Interpret ``name=value`` pairs; AVC prefixes and ``msg='...'`` handled inside."""
    out: list[str] = []
    prefix = ""
    if body.startswith("avc:"):
        at = body.find(" for ")
        if at >= 0:
            rest = body[at + 5 :]
            lead = len(rest) - len(rest.lstrip(" "))
            prefix = body[: at + 5 + lead]
            body = rest[lead:]
    for name, raw in field_pairs(body):
        if name == "msg" and raw.startswith("'"):
            inner = raw[1:-1] if raw.endswith("'") and len(raw) > 1 else raw[1:]
            out.append(f"msg='{_interpret_body(ctx, inner).rstrip()}'")
            continue
        out.append(f"{name}={_field(ctx, name, raw)}")
    return prefix + " ".join(out)


def interpret_record(rec: Record) -> str:
    """One record as ``ausearch -i`` prints it (without the trailing space)."""
    ctx = _Context(rec)
    body = rec.body.decode("utf-8", "replace")
    if rec.interpreted:
        return f"type={rec.type} msg=audit({_local_stamp(rec)}) : {body}".rstrip()
    if rec.type in ("SYSCALL", "SECCOMP"):
        fields = dict(field_pairs(body))
        ctx.args = fields
        ctx.arch = ctx.enriched.get("arch") or arch_name(fields.get("arch", ""))
        call = fields.get("syscall", "")
        ctx.syscall = ctx.enriched.get("syscall") or (
            syscall_name(int(call), ctx.arch) if call.isdigit() else None
        )
    return f"type={rec.type} msg=audit({_local_stamp(rec)}) : {_interpret_body(ctx, body)}"


def _localtime(sec: float) -> time.struct_time | None:
    """Local time, or None for a time stamp the C library cannot represent."""
    try:
        return time.localtime(sec)
    except (OverflowError, OSError, ValueError):
        return None


def _local_stamp(rec: Record) -> str:
    lt = _localtime(rec.sec)
    stamp = time.strftime("%x %T", lt) if lt is not None else str(rec.sec)
    return f"{stamp}.{rec.milli:03d}:{rec.serial}"


def _raw_line(rec: Record) -> str:
    return rec.line.decode("utf-8", "replace")


def _exact_interpretation(event: Event) -> str | None:
    """ausearch's ``-i`` lines for the event through libauparse (None without it, or
    for records pasted from ``ausearch -i``, which are printed as they are)."""
    from svirt.audit import auparse_interp

    if not auparse_interp.available() or any(r.interpreted for r in event.records):
        return None
    first = event.records[0]
    parts: list[bytes] = []
    for rec in reversed(event.records):
        line = auparse_interp.interpret_line(
            rec.line,
            rec.type_id,
            rec.type if rec.type_id in MSG_TYPES else None,
            first.sec,
            first.milli,
            first.serial,
            first.node,
            rec.interp,
        )
        if line is None:
            return None
        parts.append(line)
    return b"".join(parts).decode("utf-8", "replace")


def format_event(event: Event, mode: str = "default") -> str:
    """The event as ausearch prints it: ``raw``, ``default`` or ``interpret``."""
    if mode == "raw":
        # ausearch marks a whole event ENRICHED when one of its records is, and then
        # prints the separator after every record, a bare one where there is no
        # enriched part.
        if any(r.interp is not None for r in event.records):
            return "".join(
                (r.text if r.interp is not None else _raw_line(r) + "\x1d") + "\n"
                for r in event.records
            )
        return "".join(r.text + "\n" for r in event.records)
    lines = ["----"]
    if mode == "interpret":
        exact = _exact_interpretation(event)
        if exact is not None:  # (only the last record of a daemon event, as ausearch)
            return "----\n" + exact
        lines.extend(interpret_record(r) + " " for r in reversed(event.records))
    else:
        lt = _localtime(event.sec)
        lines.append(f"time->{time.asctime(lt) if lt is not None else event.sec}")
        records = event.records
        if 1200 <= records[-1].type_id < 1300:  # ausearch prints a daemon event's last
            records = records[-1:]
        lines.extend(_raw_line(r) for r in reversed(records))
    return "\n".join(lines) + "\n"


def _fields(rec: Record) -> dict[str, Any]:
    from svirt.audit.records import parse_fields

    return parse_fields(rec.body.decode("utf-8", "replace"))


def event_to_dict(event: Event, interpret: bool = False) -> dict[str, Any]:
    """A JSON-ready view: the event's time, serial, and each record's decoded fields."""
    try:
        when: str | None = (
            datetime.fromtimestamp(event.time, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    except (OverflowError, OSError, ValueError):
        when = None
    records: list[dict[str, Any]] = []
    fmt: Callable[[Record], str] = interpret_record if interpret else _raw_line
    for rec in event.records:
        item: dict[str, Any] = {
            "type": rec.type,
            "fields": _fields(rec),
            "text": fmt(rec),
            "source": rec.source,
            "line": rec.lineno or None,
            "offset": rec.offset if rec.offset >= 0 else None,
        }
        enriched = parse_enriched(rec.interp)
        if enriched:
            item["enriched"] = enriched
        records.append(item)
    return {
        "serial": event.serial,
        "time": when,
        "epoch": event.sec,
        "milli": event.milli,
        "node": event.node,
        "types": list(event.types),
        "records": records,
    }
