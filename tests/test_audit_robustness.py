"""Hostile and broken input never raises: parsing, matching, formatting, explaining.

Hypothesis builds lines from the pieces real records are made of (headers, stamps of any
size, quoted/hex/bare values, AVC braces, ``msg='...'``, the 0x1D separator) and from raw
bytes; every entry point must return, never raise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svirt.audit.events import Event
from svirt.audit.explain import explain
from svirt.audit.interpret import event_to_dict, format_event, interpret_record
from svirt.audit.matching import Matcher
from svirt.audit.reader import LogInput, ReadStats, Record, parse_record
from svirt.audit.records import (
    parse_avc,
    parse_cwd,
    parse_fields,
    parse_path,
    parse_proctitle,
    parse_syscall,
)
from svirt.audit.search import SearchCriteria, parse_message_types, scan_exact

TYPES = [
    "AVC",
    "USER_AVC",
    "SYSCALL",
    "PATH",
    "CWD",
    "PROCTITLE",
    "LOGIN",
    "USER_START",
    "CONFIG_CHANGE",
    "DAEMON_START",
    "SECCOMP",
    "NETFILTER_CFG",
    "EXECVE",
    "UNKNOWN[9]",
    "ANOM_ABEND",
    "TTY",
    "INTEGRITY_RULE",
    "MAC_STATUS",
    "avc",
    "X",
]
NAMES = [
    "pid",
    "comm",
    "exe",
    "key",
    "res",
    "success",
    "syscall",
    "arch",
    "a0",
    "a1",
    "exit",
    "name",
    "scontext",
    "tcontext",
    "tclass",
    "permissive",
    "msg",
    "proctitle",
    "mode",
    "uid",
    "auid",
    "ses",
    "cap_fp",
    "family",
    "sig",
    "code",
    "list",
    "prom",
    "acct",
    "cwd",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "-13",
            "yes",
            "no",
            "(null)",
            "(none)",
            "n/a",
            "?",
            "'",
            '"',
            "ffffff9c",
            "c000003e",
            "0100644",
            "4294967295",
            "99999999999999999999",
            "system_u:object_r:svirt_image_t:s0:c1,c2",
            "s0tclass=file",
            "{",
            "}",
        ]
    ),
    st.text(alphabet="0123456789ABCDEFabcdef", max_size=12),
    st.text(max_size=12).map(lambda t: '"' + t + '"'),
    st.text(max_size=12).map(lambda t: "'" + t),
)
FIELD = st.builds(lambda n, v: f"{n}={v}", st.sampled_from(NAMES), VALUES)
STAMP = st.one_of(
    st.builds(
        lambda s, m, n: f"{s}.{m}:{n}",
        st.integers(0, 10**22),
        st.integers(0, 10**5),
        st.integers(0, 10**12),
    ),
    st.sampled_from(
        ["12/05/25 00:49:41.131:1", "99/99/99 99:99:99.999:1", "", "1.2", ":3", "a.b:c"]
    ),
)
PREFIX = st.sampled_from(["", "avc:  denied  { read write } for  ", "avc: granted { x ", "avc: {}"])


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    node = draw(st.sampled_from(["", "node=h ", "node= "]))
    head = f"{node}type={draw(st.sampled_from(TYPES))} msg=audit({draw(STAMP)}): "
    body = draw(PREFIX) + " ".join(draw(st.lists(FIELD, max_size=12)))
    line = (head + body).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        line += b"\x1d" + draw(st.binary(max_size=20))
    return line + draw(st.binary(max_size=4))


CRITERIA = [
    SearchCriteria(),
    SearchCriteria(types=parse_message_types("AVC,SYSCALL"), comm="q", exe="e", key="k"),
    SearchCriteria(pid=1, success=False),
    SearchCriteria(success=True, whole_word=True, comm="qemu-kvm"),
    SearchCriteria(event_id=1, start=0, end=10**12),
]


def _all_views(rec: Record) -> None:
    parse_fields(rec.body.decode("utf-8", "replace"))
    parse_avc(rec)
    parse_syscall(rec)
    parse_path(rec)
    parse_cwd(rec)
    parse_proctitle(rec)
    interpret_record(rec)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(lines(), st.binary(max_size=80)), min_size=1, max_size=6))
def test_nothing_raises(batch: list[bytes]) -> None:
    records = []
    for line in batch:
        rec = parse_record(line, "f", 1)
        if isinstance(rec, Record):
            _all_views(rec)
            records.append(rec)
        for crit in CRITERIA:
            Matcher(crit).match_lines(1, 1, batch)
    if records:
        event = Event(tuple(records))
        for mode in ("raw", "default", "interpret"):
            format_event(event, mode)
        event_to_dict(event, interpret=True)
        explain([event], oracle=None, inspect_files=False)


def test_garbage_file_through_the_cli(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    junk = bytes(range(256)) * 50 + b"\ntype=AVC msg=audit(99999999999999999999.1:2): avc: {\n"
    log.write_bytes(junk + b"\n" + b"type=SYSCALL msg=audit(1.1:1): " + b"a=" * 9000 + b"\n")
    svirt = str(Path(sys.executable).parent / "svirt")
    for args in (["search", "-i"], ["search", "-m", "AVC", "--json"], ["explain", "--no-policy"]):
        proc = subprocess.run(
            [svirt, "audit", *args, "-if", str(log)], capture_output=True, text=True, check=False
        )
        assert proc.returncode in (0, 1), proc.stderr
        assert "Traceback" not in proc.stderr


def test_scan_of_pasted_and_broken_text(tmp_path: Path) -> None:
    log = tmp_path / "mixed.log"
    log.write_text(
        "----\ntime->Fri Dec  5 00:49:41 2025\n"
        "type=AVC msg=audit(12/05/25 00:49:41.131:7) : avc:  denied  { write } for pid=1 "
        "comm=qemu-kvm scontext=a:b:c:s0 tcontext=d:e:f:s0tclass=file permissive=0\n"
        "Dec  5 00:49:41 vm kernel: audit: type=1400 audit(1764924581.131:8): avc:  denied  "
        '{ read } for  pid=2 comm="x" scontext=a:b:c:s0 tcontext=d:e:f:s0 tclass=file\n'
    )
    stats = ReadStats()
    events = list(scan_exact([LogInput(str(log))], SearchCriteria(comm="qemu-kvm"), stats))
    assert [e.serial for e in events] == [7] and stats.malformed == 0
