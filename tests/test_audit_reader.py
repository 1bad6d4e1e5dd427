"""The audit reader and event grouping: real files, real formats, bad input.

Fixtures: ``tests/data/audit`` (see its README) and logs written here by
``bench/gen_audit_log.py``.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

from svirt.audit.events import EventGrouper, group_records, is_single_record_type
from svirt.audit.reader import (
    MAX_LINE,
    LogInput,
    ReadStats,
    expand_inputs,
    iter_records,
    msg_type_id,
    parse_record,
    rotated_set,
    system_log,
)
from svirt.audit.records import (
    parse_avc,
    parse_enriched,
    parse_fields,
    parse_path,
    parse_proctitle,
    parse_syscall,
)
from svirt.errors import AuditError

DATA = Path(__file__).parent / "data" / "audit"
ROOT = Path(__file__).parent.parent


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_audit_log", ROOT / "bench" / "gen_audit_log.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_audit_log"] = mod
    spec.loader.exec_module(mod)
    return mod


def records_of(path: Path) -> tuple[list, ReadStats]:
    stats = ReadStats()
    return list(iter_records([LogInput(str(path))], stats)), stats


# --- records ---------------------------------------------------------------------------


def test_raw_seed_records_parse() -> None:
    recs, stats = records_of(DATA / "seed_000_raw.log")
    assert [r.type for r in recs] == ["AVC", "SYSCALL", "PROCTITLE"]
    assert stats.malformed == 0
    assert {(r.sec, r.milli, r.serial) for r in recs} == {(1764924581, 131, 15655)}
    avc = parse_avc(recs[0])
    assert avc is not None
    assert avc.denied and avc.perms == ("write",) and avc.permissive is False
    assert avc.scontext == "system_u:system_r:svirt_t:s0:c392,c662"
    assert avc.tcontext == "system_u:object_r:virt_image_t:s0"
    assert (avc.tclass, avc.name, avc.dev, avc.ino, avc.pid) == (
        "file",
        "ol810.qcow2",
        "dm-0",
        168652224,
        467192,
    )
    sc = parse_syscall(recs[1])
    assert sc is not None
    assert (sc.arch, sc.syscall, sc.success, sc.exit, sc.errno_name) == (
        "x86_64",
        "openat",
        False,
        -13,
        "EACCES",
    )
    argv = parse_proctitle(recs[2])
    assert argv[:3] == ["/usr/libexec/qemu-kvm", "-name", "guest=ol810,debug-threads=on"]


def test_enriched_part_is_split_and_names_win() -> None:
    recs, _ = records_of(DATA / "seed_000_enriched.log")
    syscall = recs[1]
    assert syscall.interp is not None and syscall.line.endswith(b"key=(null)")
    enriched = parse_enriched(syscall.interp)
    assert enriched["uid"] == "qemu" and enriched["syscall"] == "openat"
    info = parse_syscall(syscall)
    assert info is not None and info.uid == "qemu"


def test_seed_verbatim_interpreted_records_parse() -> None:
    """The seed's own lines (ausearch -i output, formatting damage and all)."""
    import os
    import time

    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/Los_Angeles"
    time.tzset()
    try:
        recs, stats = records_of(DATA / "seed_000_ausearch_i.txt")
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
    assert stats.malformed == 0  # the "----" separator is not an error
    assert [r.type for r in recs] == ["PROCTITLE", "SYSCALL", "AVC"]
    assert all(r.interpreted and r.sec == 1764924581 and r.serial == 15655 for r in recs)
    avc = parse_avc(recs[2])
    assert avc is not None
    # "...:s0tclass=file" in the seed: the context and the class are told apart.
    assert avc.tcontext == "system_u:object_r:virt_image_t:s0" and avc.tclass == "file"
    sc = parse_syscall(recs[1])
    assert sc is not None and (sc.syscall, sc.errno_name) == ("openat", "EACCES")
    assert parse_proctitle(recs[0])[2] == "guest=ol810,debug-threads=on"


@pytest.mark.parametrize(
    ("line", "kind", "serial"),
    [
        (b"node=h1 type=AVC msg=audit(1.002:3): avc:  denied  { read } for x=1", "AVC", 3),
        (
            b"Dec  5 00:49:41 vm kernel: audit: type=1400 audit(1764924581.131:15655): "
            b'avc:  denied  { write } for  pid=1 comm="q" tclass=file',
            "AVC",
            15655,
        ),
        (b"type=UNKNOWN[1334] msg=audit(5.000:7): prog-id=1", "UNKNOWN[1334]", 7),
    ],
)
def test_other_line_forms(line: bytes, kind: str, serial: int) -> None:
    rec = parse_record(line)
    assert not isinstance(rec, str)
    assert rec.type == kind and rec.serial == serial
    if kind.startswith("UNKNOWN"):
        assert rec.type_id == 1334


@pytest.mark.parametrize(
    "line",
    [
        b"garbage",
        b"type=AVC",
        b"type=AVC msg=audit(oops): x",
        b"type=AVC msg=audit(1700000000.100:12",
        b"\x00\x01\xff binary",
        b"node=",
        "type=AVC msg=audit(1.2:3\u00e9): x".encode(),
    ],
)
def test_malformed_lines_are_reasons_not_exceptions(line: bytes) -> None:
    assert isinstance(parse_record(line, "f", 1), str)


def test_malformed_lines_counted_with_locations(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    good = (DATA / "seed_000_raw.log").read_bytes()
    log.write_bytes(b"junk one\n" + good + b"\x00\xffbinary\n\n" + b"x" * (MAX_LINE + 10) + b"\n")
    recs, stats = records_of(log)
    assert len(recs) == 3
    assert stats.malformed == 3
    assert stats.malformed_examples[0] == f"{log}:1: not an audit record"
    assert any("line too long" in e for e in stats.malformed_examples)
    assert stats.summary() is not None and "3 malformed lines" in stats.summary()  # type: ignore[operator]


def test_long_line_without_newline_at_end(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes((DATA / "seed_000_raw.log").read_bytes() + b"y" * (MAX_LINE * 3))
    recs, stats = records_of(log)
    assert len(recs) == 3 and stats.malformed == 1


def test_missing_file_is_an_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="No such file"):
        expand_inputs([str(tmp_path / "nope.log")])


# --- rotated sets, directories, gzip, stdin ----------------------------------------------


def test_rotated_set_oldest_first_and_gzip(tmp_path: Path) -> None:
    base = tmp_path / "audit.log"
    lines = (DATA / "seed_000_raw.log").read_bytes().splitlines(keepends=True)
    (tmp_path / "audit.log.2").write_bytes(lines[0])
    with gzip.open(tmp_path / "audit.log.1.gz", "wb") as fh:
        fh.write(lines[1])
    base.write_bytes(lines[2])
    (tmp_path / "audit.log.4").write_bytes(b"never read: .3 is missing\n")
    assert rotated_set(base) == [tmp_path / "audit.log.2", tmp_path / "audit.log.1.gz", base]
    inputs = expand_inputs([str(tmp_path)])
    assert [i.path for i in inputs] == [str(p) for p in rotated_set(base)]
    recs = list(iter_records(inputs, ReadStats()))
    assert [r.type for r in recs] == ["AVC", "SYSCALL", "PROCTITLE"]
    events = list(group_records(recs))
    assert len(events) == 1, "an event split across rotated files is still one event"


def test_system_log_from_auditd_conf(tmp_path: Path) -> None:
    conf = tmp_path / "auditd.conf"
    conf.write_text("# x\nlog_file = /srv/audit/a.log\nflush = INCREMENTAL_ASYNC\n")
    assert system_log(conf) == Path("/srv/audit/a.log")
    assert system_log(tmp_path / "none.conf") == Path("/var/log/audit/audit.log")


def test_stdin_input(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (DATA / "seed_000_raw.log").read_bytes()
    fake = io.TextIOWrapper(io.BytesIO(data))
    monkeypatch.setattr(sys, "stdin", fake)
    recs = list(iter_records([LogInput("-")], ReadStats()))
    assert len(recs) == 3


# --- fields -------------------------------------------------------------------------------


def test_fields_user_message_and_hex() -> None:
    body = (
        "pid=1 uid=0 auid=4294967295 ses=4294967295 subj=system_u:system_r:init_t:s0 "
        'msg=\'avc:  denied  { status } for auid=n/a uid=0 gid=0 cmdline="" '
        "scontext=system_u:system_r:virtd_t:s0-s0:c0.c1023 tcontext=system_u:system_r:init_t:s0 "
        'tclass=system exe="/usr/lib/systemd/systemd" sauid=0 hostname=? addr=? terminal=?\''
    )
    f = parse_fields(body)
    assert f["avc"] == "denied" and f["perms"] == "status" and f["tclass"] == "system"
    assert f["uid"] == "0" and f["exe"] == "/usr/lib/systemd/systemd"
    assert parse_fields('comm=43505520302F4B564D name="a b"')["comm"] == "CPU 0/KVM"


def test_path_record() -> None:
    rec = parse_record(
        b"type=PATH msg=audit(1.000:2): item=0 name=2F746D702F6120622E717332 inode=42 "
        b"dev=fd:00 mode=0100644 ouid=107 ogid=107 rdev=00:00 "
        b"obj=system_u:object_r:svirt_image_t:s0:c1,c2 nametype=NORMAL"
    )
    assert not isinstance(rec, str)
    p = parse_path(rec)
    assert p is not None and p.name == "/tmp/a b.qs2" and p.inode == 42
    assert p.obj == "system_u:object_r:svirt_image_t:s0:c1,c2"


# --- grouping -----------------------------------------------------------------------------


def _line(kind: str, sec: int, serial: int, body: str = "x=1") -> bytes:
    return f"type={kind} msg=audit({sec}.000:{serial}): {body}".encode()


def _group(lines: list[bytes]) -> list[list[tuple[str, int]]]:
    recs = [r for r in (parse_record(line) for line in lines) if not isinstance(r, str)]
    return [[(r.type, r.serial) for r in e.records] for e in group_records(recs)]


def test_interleaved_events_are_grouped() -> None:
    lines = [
        _line("AVC", 10, 1),
        _line("USER_START", 10, 2),
        _line("SYSCALL", 10, 3),
        _line("SYSCALL", 10, 1),
        _line("PATH", 10, 3),
        _line("PROCTITLE", 10, 1),
    ]
    groups = _group(lines)
    assert [("USER_START", 2)] in groups
    assert [("AVC", 1), ("SYSCALL", 1), ("PROCTITLE", 1)] in groups
    assert [("SYSCALL", 3), ("PATH", 3)] in groups


def test_single_record_kinds_split_as_ausearch_does() -> None:
    """LOGIN (< 1300) completes at once: the SYSCALL with its stamp is another event."""
    groups = _group([_line("LOGIN", 10, 5), _line("SYSCALL", 10, 5), _line("PROCTITLE", 10, 5)])
    assert groups == [[("LOGIN", 5)], [("SYSCALL", 5), ("PROCTITLE", 5)]]
    assert is_single_record_type(msg_type_id("USER_AVC"))
    assert is_single_record_type(msg_type_id("PROCTITLE"))
    assert not is_single_record_type(msg_type_id("AVC"))


def test_two_second_window_completes_events() -> None:
    lines = [_line("SYSCALL", 10, 1), _line("SYSCALL", 13, 2), _line("PROCTITLE", 10, 1)]
    assert sorted(_group(lines)) == [[("PROCTITLE", 1)], [("SYSCALL", 1)], [("SYSCALL", 2)]]
    # ausearch 3.0.9: an event is complete once a new one starts 2 seconds later or more
    lines = [_line("SYSCALL", 10, 1), _line("SYSCALL", 12, 2), _line("PROCTITLE", 10, 1)]
    assert sorted(_group(lines)) == [[("PROCTITLE", 1)], [("SYSCALL", 1)], [("SYSCALL", 2)]]
    lines = [_line("SYSCALL", 10, 1), _line("SYSCALL", 11, 2), _line("PROCTITLE", 10, 1)]
    assert [("SYSCALL", 1), ("PROCTITLE", 1)] in _group(lines)


def test_nodes_keep_events_apart() -> None:
    lines = [b"node=a " + _line("SYSCALL", 10, 1), b"node=b " + _line("SYSCALL", 10, 1)]
    assert len(_group(lines)) == 2


def test_open_events_are_bounded() -> None:
    grouper: EventGrouper[int] = EventGrouper(max_open=100)
    done = 0
    for i in range(10_000):
        done += len(grouper.start(f"{i}".encode(), 10, 1300, i))
        assert grouper.open_count <= 100
    assert grouper.forced == 9_900 and done == 9_900
    assert len(grouper.finish()) == 100


def test_generated_log_streams_with_bounded_state(tmp_path: Path) -> None:
    gen = load_generator()
    log = tmp_path / "audit.log"
    with log.open("wb") as fh:
        summary = gen.generate(fh, events=3000, enriched=True, seed=5, junk=7)
    grouper: EventGrouper[object] = EventGrouper()
    peak = 0
    stats = ReadStats()
    events = 0
    for rec in iter_records([LogInput(str(log))], stats):
        key = f"{rec.sec}.{rec.milli}:{rec.serial}".encode()
        events += len(grouper.add(key, rec.sec, rec.type_id, rec))
        peak = max(peak, grouper.open_count)
    events += len(grouper.finish())
    assert stats.malformed == 7
    assert stats.records == summary.lines - 7  # the generator counts its junk lines too
    # Events complete within the 2-second window: a few hundred at most are ever open.
    assert peak < 1000
    assert events >= summary.events
