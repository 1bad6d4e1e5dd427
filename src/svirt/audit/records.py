"""Field parsing for audit record bodies, and typed views of the records svirt reads.

The kernel writes ``name=value`` pairs: quoted strings, hex-encoded strings (when the
value holds a space, quote or control byte; comm, exe, name, cwd, proctitle, key, ...),
numbers, and ``(null)``/``(none)``. Userspace records wrap their message in
``msg='...'``. AVC records open with ``avc:  denied  { perms } for`` before the pairs.
Every parser here is total: odd input gives partial results, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from svirt.audit.reader import Record

__all__ = [
    "HEX_FIELDS",
    "AvcInfo",
    "PathInfo",
    "SyscallInfo",
    "decode_hex",
    "decode_value",
    "field_pairs",
    "parse_avc",
    "parse_cwd",
    "parse_enriched",
    "parse_fields",
    "parse_path",
    "parse_proctitle",
    "parse_syscall",
]

# Fields the kernel and auditd hex-encode when the value needs it (auparse's list).
HEX_FIELDS = frozenset(
    {
        "comm",
        "exe",
        "name",
        "path",
        "cwd",
        "proctitle",
        "key",
        "acct",
        "cmd",
        "vm",
        "new-disk",
        "old-disk",
        "new-fs",
        "old-fs",
        "cgroup",
        "data",
        "old-chardev",
        "new-chardev",
        "watch",
        "dir",
        "file",
        "ocomm",
        "sw",
        "root_dir",
    }
)
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+\Z")
_AVC_HEAD = re.compile(r"avc:\s+(denied|granted)\s+\{\s*([^}]*?)\s*\}\s+for\s*")
_ERRNO_TEXT = re.compile(r"([A-Z0-9]+)\(")


def decode_hex(value: str) -> str | None:
    """Decode an even-length hex string (NULs become spaces, as auparse shows argv)."""
    if not _HEX.match(value):
        return None
    raw = bytes.fromhex(value)
    return raw.decode("utf-8", "replace")


def decode_value(name: str, value: str) -> str:
    """A field's value as text: quotes removed, hex decoded for encodable fields."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if name in HEX_FIELDS:
        decoded = decode_hex(value)
        if decoded is not None:
            return decoded
    return value


def field_pairs(text: str) -> list[tuple[str, str]]:
    """``name=value`` pairs in order; quoted values may hold spaces."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        sp = text.find(" ", i)
        if eq < 0 or (0 <= sp < eq):
            # A bare word (e.g. "avc:" or "for"): skip it.
            i = n if sp < 0 else sp + 1
            continue
        name = text[i:eq]
        j = eq + 1
        if j < n and text[j] in "\"'":
            quote = text[j]
            end = text.find(quote, j + 1)
            if end < 0:
                end = n - 1
            out.append((name, text[j : end + 1]))
            i = end + 1
        else:
            end = text.find(" ", j)
            if end < 0:
                end = n
            out.append((name, text[j:end]))
            i = end
    return out


def parse_fields(body: str) -> dict[str, str]:
    """Fields of a record body, decoded; the first occurrence of a name wins. The
    contents of a userspace ``msg='...'`` are merged in (outer names win)."""
    fields: dict[str, str] = {}
    inner: str | None = None
    m = _AVC_HEAD.search(body)
    if m is not None and m.start() < 8:
        fields["avc"] = m.group(1)
        fields["perms"] = m.group(2)
        body = body[m.end() :]
    for name, value in field_pairs(body):
        if name == "msg" and value.startswith("'"):
            inner = value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
            continue
        if name not in fields:
            fields[name] = decode_value(name, value)
    if inner is not None:
        im = _AVC_HEAD.search(inner)
        if im is not None:
            fields.setdefault("avc", im.group(1))
            fields.setdefault("perms", im.group(2))
            inner = inner[im.end() :]
        for name, value in field_pairs(inner):
            if name not in fields:
                fields[name] = decode_value(name, value)
    # A pasted record may have lost the space before tclass= ("...:s0tclass=file").
    for ctx in ("tcontext", "scontext"):
        fused = fields.get(ctx)
        if fused is not None and "tclass=" in fused:
            head, _, tail = fused.partition("tclass=")
            fields[ctx] = head
            fields.setdefault("tclass", tail)
    return fields


def parse_enriched(interp: bytes | None) -> dict[str, str]:
    """The ENRICHED part: ``ARCH=x86_64 UID="qemu"`` -> ``{"arch": "x86_64", "uid": "qemu"}``."""
    if not interp:
        return {}
    text = interp.decode("utf-8", "replace").strip()
    return {name.lower(): decode_value("", value) for name, value in field_pairs(text)}


def _int(value: str | None, base: int = 10) -> int | None:
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AvcInfo:
    """An AVC or USER_AVC decision."""

    denied: bool
    perms: tuple[str, ...]
    scontext: str | None
    tcontext: str | None
    tclass: str | None
    permissive: bool | None
    pid: int | None
    comm: str | None
    exe: str | None
    name: str | None
    path: str | None
    dev: str | None
    ino: int | None
    user_space: bool = False
    fields: dict[str, str] = field(default_factory=dict, compare=False)


def parse_avc(rec: Record) -> AvcInfo | None:
    """The AVC decision in an AVC or USER_AVC record; None if it has none."""
    if rec.type not in ("AVC", "USER_AVC"):
        return None
    f = parse_fields(rec.body.decode("utf-8", "replace"))
    if "avc" not in f:
        return None
    permissive = f.get("permissive")
    return AvcInfo(
        denied=f["avc"] == "denied",
        perms=tuple(f.get("perms", "").split()),
        scontext=f.get("scontext"),
        tcontext=f.get("tcontext"),
        tclass=f.get("tclass"),
        permissive=None if permissive is None else permissive == "1",
        pid=_int(f.get("pid")),
        comm=f.get("comm"),
        exe=f.get("exe"),
        name=f.get("name"),
        path=f.get("path"),
        dev=f.get("dev"),
        ino=_int(f.get("ino")),
        user_space=rec.type == "USER_AVC",
        fields=f,
    )


@dataclass(frozen=True, slots=True)
class SyscallInfo:
    """A SYSCALL record: the system call that hit the denial and who made it."""

    arch: str | None
    syscall: str | None
    success: bool | None
    exit: int | None
    errno_name: str | None
    pid: int | None
    ppid: int | None
    uid: str | None
    comm: str | None
    exe: str | None
    subj: str | None
    key: str | None
    fields: dict[str, str] = field(default_factory=dict, compare=False)


def parse_syscall(rec: Record) -> SyscallInfo | None:
    """The SYSCALL record's facts, with names (from the ENRICHED part or the tables)."""
    if rec.type != "SYSCALL":
        return None
    from svirt.audit.interpret import arch_name, errno_name, syscall_name

    f = parse_fields(rec.body.decode("utf-8", "replace"))
    enriched = parse_enriched(rec.interp)
    arch = enriched.get("arch") or f.get("arch")
    if arch is not None and not rec.interpreted:
        arch = arch_name(arch) or arch
    call = enriched.get("syscall") or f.get("syscall")
    if call is not None and call.isdigit():
        call = syscall_name(int(call), arch) or call
    exit_value = f.get("exit")
    exit_code = _int(exit_value)
    err: str | None = None
    if exit_code is not None and exit_code < 0:
        err = errno_name(-exit_code)
    elif exit_value is not None and not exit_value.lstrip("-").isdigit():
        m = _ERRNO_TEXT.match(exit_value)
        err = m.group(1) if m else None
    success = f.get("success")
    uid = enriched.get("uid") or f.get("uid")
    return SyscallInfo(
        arch=arch,
        syscall=call,
        success=None if success is None else success == "yes",
        exit=exit_code,
        errno_name=err,
        pid=_int(f.get("pid")),
        ppid=_int(f.get("ppid")),
        uid=uid,
        comm=f.get("comm"),
        exe=f.get("exe"),
        subj=f.get("subj"),
        key=f.get("key"),
        fields=f,
    )


@dataclass(frozen=True, slots=True)
class PathInfo:
    """A PATH record: one file the system call named."""

    item: int | None
    name: str | None
    inode: int | None
    dev: str | None
    mode: str | None
    obj: str | None
    nametype: str | None


def parse_path(rec: Record) -> PathInfo | None:
    if rec.type != "PATH":
        return None
    f = parse_fields(rec.body.decode("utf-8", "replace"))
    name = f.get("name")
    return PathInfo(
        item=_int(f.get("item")),
        name=None if name in (None, "(null)") else name,
        inode=_int(f.get("inode")),
        dev=f.get("dev"),
        mode=f.get("mode"),
        obj=f.get("obj"),
        nametype=f.get("nametype"),
    )


def parse_cwd(rec: Record) -> str | None:
    if rec.type != "CWD":
        return None
    return parse_fields(rec.body.decode("utf-8", "replace")).get("cwd")


def parse_proctitle(rec: Record) -> list[str]:
    """The command line (argv) of a PROCTITLE record; the kernel keeps 128 bytes."""
    if rec.type != "PROCTITLE":
        return []
    body = rec.body.decode("utf-8", "replace")
    _, sep, value = body.partition("proctitle=")
    if not sep:
        return []
    value = value.rstrip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return [value[1:-1]]
    if _HEX.match(value):
        raw = bytes.fromhex(value)
        return [part.decode("utf-8", "replace") for part in raw.split(b"\0")]
    # Interpreted (pasted from ausearch -i): arguments joined by spaces.
    return value.split(" ")
