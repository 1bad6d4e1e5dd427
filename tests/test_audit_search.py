"""``svirt audit search`` against the real ausearch (audit 3.0.9, installed by setup).

For a few dozen filter combinations on logs written by ``bench/gen_audit_log.py`` (raw,
ENRICHED, with junk lines, with ``node=``, as a rotated set), the events svirt returns
(by serial) equal ausearch's, with both search engines. Output formats are compared line
for line with ausearch's, and the seed's event is a golden file
(``tests/data/audit``, see its README). Time keywords are checked with an injected clock,
and against ausearch on a log written around the real clock.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from svirt.audit import fastscan
from svirt.audit.interpret import format_event
from svirt.audit.reader import LogInput, ReadStats, expand_inputs
from svirt.audit.search import (
    SearchCriteria,
    parse_event_id,
    parse_message_types,
    parse_pid,
    parse_success,
    parse_time,
    scan_exact,
    search,
)
from svirt.errors import AuditError
from test_audit_reader import load_generator

DATA = Path(__file__).parent / "data" / "audit"
AUSEARCH = shutil.which("ausearch") or "/usr/sbin/ausearch"
needs_ausearch = pytest.mark.skipif(
    not os.access(AUSEARCH, os.X_OK),
    reason="ausearch not installed (scripts/setup.sh installs auditd)",
)
_STAMP = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")


@pytest.fixture
def tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run with a fixed TZ (UTC unless parametrized), restored afterwards."""
    zone = getattr(request, "param", "UTC")
    old = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    yield zone
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def ausearch(
    inputs: str, args: list[str], zone: str = "UTC", flags: tuple[str, ...] = ("--raw",)
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [AUSEARCH, "-if", inputs, *flags, *args],
        capture_output=True,
        env={"LC_ALL": "C", "TZ": zone, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )


def ausearch_serials(inputs: str, args: list[str]) -> set[int]:
    out = ausearch(inputs, args).stdout
    return {int(m.group(3)) for m in _STAMP.finditer(out)}


def criteria_from(args: list[str], now: float | None = None) -> SearchCriteria:
    """The ausearch options of a test case as svirt criteria (what the CLI does)."""
    c: dict[str, object] = {}
    it = iter(args)
    for a in it:
        if a == "-m":
            c["types"] = parse_message_types(next(it))
        elif a == "-c":
            c["comm"] = next(it)
        elif a == "-x":
            c["exe"] = next(it)
        elif a == "-k":
            c["key"] = next(it)
        elif a == "-p":
            c["pid"] = parse_pid(next(it))
        elif a == "-sv":
            c["success"] = parse_success(next(it))
        elif a == "-a":
            c["event_id"] = parse_event_id(next(it))
        elif a == "-w":
            c["whole_word"] = True
        else:
            raise ValueError(f"{a}: time ranges go through _timed()")
    return SearchCriteria(**c)  # type: ignore[arg-type]


def svirt_serials(inputs: list[LogInput], crit: SearchCriteria, engine: str) -> set[int]:
    return {e.serial for e in search(inputs, crit, ReadStats(), engine=engine)}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    gen = load_generator()
    d = tmp_path_factory.mktemp("auditlogs")
    out: dict[str, Path] = {}
    with (d / "raw.log").open("wb") as fh:
        gen.generate(fh, events=6000, seed=11, junk=5)
    out["raw"] = d / "raw.log"
    with (d / "enriched.log").open("wb") as fh:
        gen.generate(fh, events=6000, enriched=True, seed=12, junk=3)
    out["enriched"] = d / "enriched.log"
    # The raw log as a rotated set cut at arbitrary lines (events cross the cuts).
    rot = d / "rotated"
    rot.mkdir()
    lines = out["raw"].read_bytes().splitlines(keepends=True)
    cuts = [0, len(lines) // 3 + 1, 2 * len(lines) // 3 - 2, len(lines)]
    for i, name in enumerate(("audit.log.2", "audit.log.1", "audit.log")):
        (rot / name).write_bytes(b"".join(lines[cuts[i] : cuts[i + 1]]))
    out["rotated"] = rot
    # Records from two hosts, as an aggregating server stores them.
    node = d / "node.log"
    with node.open("wb") as fh:
        for i, line in enumerate(out["enriched"].read_bytes().splitlines(keepends=True)):
            fh.write(b"node=host%d " % (i % 2) + line if line.startswith(b"type=") else line)
    out["node"] = node
    return out


# Each case: ausearch's own arguments. Times are UTC; the generated logs start at
# 11/13/25 02:13:20 and last about 30 s.
CASES: list[list[str]] = [
    ["-m", "AVC"],
    ["-m", "AVC", "-c", "qemu-kvm"],
    ["-m", "avc,user_avc"],
    ["-m", "AVC", "-w", "-c", "qemu-kvm"],
    ["-c", "qemu"],
    ["-c", "CPU"],
    ["-m", "SYSCALL", "-sv", "no"],
    ["-sv", "yes"],
    ["-k", "svirt"],
    ["-k", "null"],
    ["-x", "/usr/libexec/qemu-kvm"],
    ["-m", "LOGIN", "-c", "sshd"],
    ["-m", "USER_ACCT", "-sv", "no"],
    ["-m", "CONFIG_CHANGE", "-k", "identity"],
    ["-m", "PROCTITLE"],
    ["-m", "NETFILTER_CFG", "-c", "iptables"],
    ["-m", "ANOM_PROMISCUOUS", "-p", "1400"],
    ["-m", "SECCOMP", "-x", "qemu"],
    ["-m", "USER_AVC", "-sv", "no"],
    ["-m", "VIRT_CONTROL", "-x", "libvirtd"],
    ["-m", "EXECVE", "-k", "exec"],
    ["-m", "DAEMON_START", "-p", "612", "-sv", "yes"],
    ["-m", "SERVICE_STOP", "-sv", "no"],
    ["-m", "1400,1107", "-sv", "no"],
    ["-p", "1"],
]
TIMED: list[list[str]] = [
    ["-m", "AVC", "-ts", "11/13/25", "02:13:30", "-te", "11/13/25", "02:13:40"],
    ["-ts", "02:13:35", "11/13/25", "-c", "qemu"],
    ["-m", "SYSCALL", "-te", "11/13/25", "02:13:25"],
]


def _case_id(args: list[str]) -> str:
    return " ".join(args)


@needs_ausearch
@pytest.mark.parametrize("kind", ["raw", "enriched"])
@pytest.mark.parametrize("args", CASES, ids=_case_id)
def test_same_events_as_ausearch(
    logs: dict[str, Path], tz: str, kind: str, args: list[str]
) -> None:
    path = logs[kind]
    theirs = ausearch_serials(str(path), args)
    crit = criteria_from(args)
    inputs = [LogInput(str(path))]
    assert svirt_serials(inputs, crit, "exact") == theirs
    assert svirt_serials(inputs, crit, "fast") == theirs


def _timed(args: list[str], now: float) -> SearchCriteria:
    rest: list[str] = []
    times: dict[str, int] = {}
    i = 0
    while i < len(args):
        if args[i] in ("-ts", "-te"):
            words = [args[i + 1]]
            if i + 2 < len(args) and not args[i + 2].startswith("-"):
                words.append(args[i + 2])
            times["start" if args[i] == "-ts" else "end"] = parse_time(
                words, end=args[i] == "-te", now=now
            )
            i += 1 + len(words)
        else:
            rest.append(args[i])
            i += 1
    base = criteria_from(rest)
    return SearchCriteria(
        types=base.types,
        comm=base.comm,
        exe=base.exe,
        key=base.key,
        pid=base.pid,
        success=base.success,
        event_id=base.event_id,
        whole_word=base.whole_word,
        start=times.get("start"),
        end=times.get("end"),
    )


@needs_ausearch
@pytest.mark.parametrize("args", TIMED, ids=_case_id)
def test_time_ranges_same_as_ausearch(logs: dict[str, Path], tz: str, args: list[str]) -> None:
    path = logs["raw"]
    theirs = ausearch_serials(str(path), args)
    crit = _timed(args, time.time())
    inputs = [LogInput(str(path))]
    assert theirs, "the case should match something"
    assert svirt_serials(inputs, crit, "exact") == theirs
    assert svirt_serials(inputs, crit, "fast") == theirs


@needs_ausearch
@pytest.mark.parametrize("kind", ["rotated", "node"])
@pytest.mark.parametrize(
    "args",
    [["-m", "AVC", "-c", "qemu-kvm"], ["-m", "PROCTITLE"], ["-k", "svirt"], ["-m", "LOGIN"]],
    ids=_case_id,
)
def test_rotated_sets_and_nodes_same_as_ausearch(
    logs: dict[str, Path], tz: str, kind: str, args: list[str]
) -> None:
    path = logs[kind]
    theirs = ausearch_serials(str(path), args)
    inputs = expand_inputs([str(path)])
    crit = criteria_from(args)
    assert svirt_serials(inputs, crit, "exact") == theirs
    assert svirt_serials(inputs, crit, "fast") == theirs


@needs_ausearch
def test_event_id(logs: dict[str, Path], tz: str) -> None:
    path = logs["raw"]
    some = sorted(ausearch_serials(str(path), ["-m", "AVC", "-c", "qemu-kvm"]))[3]
    theirs = ausearch_serials(str(path), ["-a", str(some)])
    assert theirs == {some}
    crit = criteria_from(["-a", str(some)])
    assert svirt_serials([LogInput(str(path))], crit, "fast") == theirs


def test_fast_engine_across_small_chunks(
    logs: dict[str, Path], tz: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk edges (records of one event on both sides) change nothing."""
    monkeypatch.setattr(fastscan, "READ_SIZE", 3 * fastscan.WINDOW + 777)
    inputs = expand_inputs([str(logs["rotated"])])
    for args in (["-m", "AVC"], ["-m", "SYSCALL", "-sv", "no"], ["-m", "PROCTITLE", "-c", "qemu"]):
        crit = criteria_from(args)
        fast = sorted((e.serial, e.types) for e in fastscan.scan_fast(inputs, crit, ReadStats()))
        exact = sorted((e.serial, e.types) for e in scan_exact(inputs, crit, ReadStats()))
        assert fast == exact, args


def test_malformed_lines_reported_by_both_engines(logs: dict[str, Path]) -> None:
    crit = criteria_from(["-m", "AVC"])
    for engine in ("exact", "fast"):
        stats = ReadStats()
        list(search([LogInput(str(logs["raw"]))], crit, stats, engine=engine))
        assert stats.malformed == 5, engine
        assert stats.malformed_examples and str(logs["raw"]) in stats.malformed_examples[0]


# --- output formats -------------------------------------------------------------------------


@needs_ausearch
@pytest.mark.parametrize("tz", ["America/Los_Angeles"], indirect=True)
def test_seed_golden_outputs(tz: str) -> None:
    def render(path: Path, mode: str) -> str:
        events = scan_exact([LogInput(str(path))], SearchCriteria(), ReadStats())
        return "".join(format_event(e, mode) for e in events)

    golden_i = (DATA / "seed_000_ausearch_i_c_locale.txt").read_text()
    golden_default = (DATA / "seed_000_ausearch_default.txt").read_text()
    assert render(DATA / "seed_000_enriched.log", "interpret") == golden_i
    assert render(DATA / "seed_000_raw.log", "default") == golden_default
    # The golden files are what this host's ausearch prints.
    live = ausearch(str(DATA / "seed_000_enriched.log"), [], zone=tz, flags=("-i",))
    assert live.stdout.decode() == golden_i
    # And the seed's own lines, modulo its date format and its two formatting slips.
    seed = (DATA / "seed_000_ausearch_i.txt").read_text().splitlines()
    ours = golden_i.splitlines()
    for mine, theirs in zip(ours, seed, strict=True):
        normal = (
            mine.rstrip()
            .replace("12/05/25", "12/05/2025")
            .replace("avc:  denied  { write } for  pid", "avc: denied { write } for pid")
            .replace(":s0 tclass=", ":s0tclass=")
        )
        assert normal == theirs


@needs_ausearch
@pytest.mark.parametrize("mode", ["interpret", "default", "raw"])
def test_output_formats_match_ausearch(logs: dict[str, Path], tz: str, mode: str) -> None:
    path = logs["enriched"]
    flags = {"interpret": ("-i",), "default": (), "raw": ("--raw",)}[mode]
    theirs = ausearch(str(path), ["-m", "AVC,SYSCALL,USER_START,CONFIG_CHANGE"], flags=flags)
    crit = criteria_from(["-m", "AVC,SYSCALL,USER_START,CONFIG_CHANGE"])
    ours = "".join(
        format_event(e, mode) for e in scan_exact([LogInput(str(path))], crit, ReadStats())
    )
    # byte for byte, in ausearch's order (0x1D of ENRICHED events included)
    assert ours == theirs.stdout.decode()


# --- time specifications, with an injected clock ----------------------------------------------

NOW = 1795302861.0  # Saturday 2026-11-21 23:14:21 UTC
BOOT = 1795301930


def _utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(time.mktime((y, mo, d, h, mi, s, 0, 0, 0)))


@pytest.mark.parametrize(
    ("words", "end", "expected"),
    [
        (["now"], False, NOW),
        (["recent"], False, NOW - 600),
        (["today"], False, (2026, 11, 21)),
        (["yesterday"], False, (2026, 11, 20)),
        (["this-week"], False, (2026, 11, 15)),
        (["week-ago"], False, (2026, 11, 14)),
        (["this-month"], False, (2026, 11, 1)),
        (["this-year"], False, (2026, 1, 1)),
        (["boot"], False, BOOT),
        (["today"], True, NOW),
        (["yesterday"], True, (2026, 11, 20)),
        (["this-week"], True, (2026, 11, 15)),
        (["recent"], True, NOW - 600),
        (["11/15/26"], False, (2026, 11, 15)),
        (["11/15/26"], True, (2026, 11, 15, 23, 14, 21)),
        (["12:00"], False, (2026, 11, 21, 12, 0, 0)),
        (["12:00"], True, (2026, 11, 21, 12, 0, 0)),
        (["11/15/26", "12:00:05"], False, (2026, 11, 15, 12, 0, 5)),
        (["12:00:05", "11/15/26"], True, (2026, 11, 15, 12, 0, 5)),
        (["today", "06:30"], False, (2026, 11, 21, 6, 30, 0)),
    ],
)
def test_time_keywords(tz: str, words: list[str], end: bool, expected: object) -> None:
    want = expected if isinstance(expected, float | int) else _utc(*expected)  # type: ignore[misc]
    assert parse_time(words, end=end, now=NOW, boot=BOOT) == int(want)


@pytest.mark.parametrize(
    "words",
    [
        ["13/45/26"],
        ["25:00"],
        ["11/15/1999"],
        ["11/15/2026"],
        ["a", "b", "c"],
        ["soon"],
        ["11/15/26", "xx:yy"],
        [],
    ],
)
def test_bad_time_is_an_error(tz: str, words: list[str]) -> None:
    with pytest.raises(AuditError):
        parse_time(words, end=False, now=NOW, boot=BOOT)


def test_boot_needs_a_boot_time(tz: str) -> None:
    with pytest.raises(AuditError, match="boot time"):
        parse_time(["boot"], end=False, now=NOW, boot=None)


@needs_ausearch
def test_time_keywords_same_as_ausearch_on_the_real_clock(tmp_path: Path, tz: str) -> None:
    """One single-record event every 10 minutes over 20 days around now; events within a
    minute of a boundary that moves with the clock are left out, so the few seconds
    between ausearch's clock and ours cannot matter."""
    from svirt.audit.search import boot_time

    now = time.time()
    boot = boot_time(now)
    avoid = [now, now - 600] + ([boot] if boot else [])
    lines = []
    serial = 0
    base = int(now // 600) * 600 + 300
    for i in range(-3, 20 * 24 * 6):
        t = base - i * 600
        if any(abs(t - a) < 60 for a in avoid):
            continue
        serial += 1
        lines.append(
            f"type=USER_START msg=audit({t}.000:{serial}): pid=1 uid=0 auid=0 ses=1 subj=x "
            'msg=\'op=test acct="root" exe="/usr/bin/x" hostname=? addr=? terminal=? res=success\''
        )
    lines.reverse()
    log = tmp_path / "clock.log"
    log.write_text("\n".join(lines) + "\n")
    words = ["recent", "now", "today", "yesterday", "this-week", "week-ago", "this-month", "boot"]
    for opt in ("-ts", "-te"):
        for word in words:
            if word == "boot" and boot is None:
                continue
            theirs = ausearch_serials(str(log), [opt, word])
            clock = time.time()
            t = parse_time([word], end=opt == "-te", now=clock, boot=boot_time(clock))
            crit = SearchCriteria(start=t) if opt == "-ts" else SearchCriteria(end=t)
            ours = svirt_serials([LogInput(str(log))], crit, "exact")
            assert ours == theirs, (opt, word)


def test_auto_engine_choice(logs: dict[str, Path]) -> None:
    """Sparse anchors (AVC) go to the fast engine, dense ones (SYSCALL) and unanchored
    criteria to the exact one, pipes and pasted text always to the exact one."""
    inputs = [LogInput(str(logs["raw"]))]
    assert fastscan.prefer_fast(inputs, criteria_from(["-m", "AVC", "-c", "qemu-kvm"]))
    assert fastscan.prefer_fast(inputs, criteria_from(["-a", "12345"]))
    assert not fastscan.prefer_fast(inputs, criteria_from(["-m", "SYSCALL"]))
    assert not fastscan.prefer_fast(inputs, criteria_from(["-c", "qemu"]))
    assert not fastscan.prefer_fast([LogInput("-")], criteria_from(["-m", "AVC"]))
    assert not fastscan.prefer_fast(
        [LogInput(str(DATA / "seed_000_ausearch_i.txt"))], criteria_from(["-m", "AVC"])
    )


def test_fast_engine_in_several_processes(
    logs: dict[str, Path], tz: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file cut into shares scanned by two processes gives the same events, offsets and
    malformed-line count as one process (events near the cuts included)."""
    monkeypatch.setattr(fastscan, "PARALLEL_MIN", 0)
    monkeypatch.setattr(fastscan, "SHARE", 256 * 1024)
    inputs = [LogInput(str(logs["raw"]))]
    assert fastscan.parallel_jobs(inputs) >= 1
    for args in (["-m", "AVC"], ["-m", "PROCTITLE", "-c", "qemu"], ["-m", "LOGIN"]):
        crit = criteria_from(args)
        one, two = ReadStats(), ReadStats()
        seq = [
            (e.serial, [r.offset for r in e.records])
            for e in search(inputs, crit, one, engine="fast", jobs=1)
        ]
        par = [
            (e.serial, [r.offset for r in e.records])
            for e in search(inputs, crit, two, engine="fast", jobs=2)
        ]
        assert par == seq, args
        assert (two.malformed, two.events, two.bytes) == (one.malformed, one.events, one.bytes)
    assert fastscan.parallel_jobs([LogInput("-")]) == 1
