"""svirt's search output against ausearch 3.0.9's, byte for byte, in ausearch's order.

Logs from two generators at several event rates: ``bench/gen_audit_log_realistic.py``
(which svirt was never tuned on: real syscall argument values, 40 and 140 events per
second of log time, raw, ENRICHED and mixed) and the project's ``bench/gen_audit_log.py``.
For every filter (66 of them, with ``-i``, ``--raw`` and the default output), the
whole output of ``ausearch -if LOG`` is compared with:

- the compiled core writing to a file descriptor (what the CLI does on a terminal or a
  pipe; ``-i`` included, through libauparse),
- the compiled core's events formatted by Python (``-i``, and captured stdout),
- the Python exact engine (``scan_exact``), the definition the core is checked against,
- and, for a few filters, the ``svirt`` command itself.

The logs are small (about 1 500 events each) so the suite stays short.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fsutil import timezone
from svirt.audit import native
from svirt.audit.interpret import format_event
from svirt.audit.reader import LogInput, ReadStats
from svirt.audit.search import SearchCriteria, scan_exact
from svirt.cli.audit import _criteria
from svirt.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
AUSEARCH = shutil.which("ausearch") or "/usr/sbin/ausearch"
SVIRT = str(Path(sys.executable).parent / "svirt")
ENV = {"LC_ALL": "C", "TZ": "UTC", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

pytestmark = pytest.mark.skipif(
    not os.access(AUSEARCH, os.X_OK), reason="ausearch not installed (scripts/setup.sh)"
)

FILTERS = [
    [],
    # -sc: a number matches any arch, and 0 every event without a syscall (ausearch's
    # search_items start at 0); a name is this machine's and the arch must be too
    ["-sc", "0"],
    ["-sc", "read"],
    ["-sc", "openat"],
    ["-sc", "257", "-m", "AVC"],
    ["-sc", "execve", "-sv", "no"],
    ["-sc", "59", "-x", "qemu"],
    ["-sc", "99999"],
    # -e: a number as strtoll(..., 0) reads it, an errno name as its positive number;
    # only SYSCALL records carry an exit (looked for after success= when -sv is given)
    ["-e", "-13"],
    ["-e", "0"],
    ["-e", "-2", "-sv", "no"],
    ["-e", "EACCES"],
    ["-e", "-13", "-m", "AVC", "-x", "qemu"],
    ["-m", "AVC"],
    ["-m", "avc,user_avc"],
    ["-m", "SYSCALL"],
    ["-m", "PATH"],
    ["-m", "PROCTITLE"],
    ["-m", "EXECVE"],
    ["-m", "SOCKADDR"],
    ["-m", "USER_AUTH,USER_ACCT,CRED_ACQ"],
    ["-m", "LOGIN"],
    ["-m", "CONFIG_CHANGE"],
    ["-m", "ANOM_ABEND"],
    ["-m", "SERVICE_START,SERVICE_STOP"],
    ["-m", "VIRT_CONTROL,VIRT_MACHINE_ID,VIRT_RESOURCE"],
    ["-m", "NETFILTER_CFG,BPF"],
    ["-c", "qemu-kvm"],
    ["-m", "AVC", "-c", "qemu-kvm"],
    ["-c", "CPU 0/KVM"],
    ["-c", "bash", "-w"],
    ["-x", "/usr/sbin/sshd"],
    ["-x", "qemu", "-sv", "no"],
    ["-k", "exec"],
    ["-k", "perm"],
    ["-k", "access", "-w"],
    ["-sv", "no"],
    ["-sv", "yes", "-m", "USER_START,USER_END"],
    ["-m", "USER_AVC", "-sv", "no"],
    ["-p", "PID"],
    ["-a", "SERIAL"],
    ["-ts", "WINDOW"],
    ["-ts", "START"],
    ["-te", "END"],
    ["-m", "AVC", "-ts", "WINDOW"],
    ["-k", "exec", "-c", "bash"],
    ["-x", "sshd", "-m", "USER_AUTH", "-sv", "no"],
    # ausearch's uid/gid selectors (numbers, gid names, unset auid, -1 meaning "any")
    ["-ui", "0"],
    ["-ui", "107"],
    ["-ui", "4294967295"],
    ["-ue", "0"],
    ["-ue", "1000"],
    ["-ul", "-1"],
    ["-ul", "1000"],
    ["-ul", "0", "-m", "USER_START,USER_END,LOGIN"],
    ["-ua", "0"],
    ["-ua", "107", "-m", "AVC"],
    ["-gi", "root"],
    ["-gi", "107"],
    ["-ge", "0", "-sv", "no"],
    ["-ga", "1000"],
    ["-ui", "0", "-ul", "1000", "-gi", "0"],
    # a user name: ausearch compares names (the enriched one, else this machine's passwd)
    ["-ui", "root"],
    ["-ul", "root", "-m", "USER_START,USER_END"],
    ["-ua", "root"],
    ["-ue", "root", "-sv", "no"],
]
MODES = {"default": (), "raw": ("--raw",), "interpret": ("-i",)}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    real = _load("gen_audit_log_realistic")
    project = _load("gen_audit_log")
    d = tmp_path_factory.mktemp("exact")
    out: dict[str, Path] = {}
    for name, rate, frac, seed in (("r40-mixed", 40.0, 0.5, 21), ("r140-enriched", 140.0, 1.0, 22)):
        path = d / f"{name}.log"
        with path.open("wb") as fh:
            real.generate(fh, events=1500, rate=rate, enriched_fraction=frac, seed=seed)
        out[name] = path
    path = d / "project-raw.log"
    with path.open("wb") as fh:
        project.generate(fh, events=1500, seed=23)
    out["project-raw"] = path
    return out


@pytest.fixture(scope="module")
def utc() -> Iterator[None]:
    with timezone("UTC"):
        yield


def _facts(path: Path) -> tuple[int, int, int]:
    """(a second, a pid, a serial) from the middle of the log."""
    data = path.read_bytes()
    mid = data.index(b"\ntype=SYSCALL ", len(data) // 2) + 1
    line = data[mid : data.index(b"\n", mid)]
    stamp = line[line.index(b"audit(") + 6 : line.index(b")")]
    sec = int(stamp.split(b".")[0])
    serial = int(stamp.split(b":")[1])
    pid = int(line.split(b" pid=")[1].split(b" ")[0])
    return sec, pid, serial


def _expand(words: list[str], path: Path) -> list[str]:
    sec, pid, serial = _facts(path)
    fmt = "%m/%d/%y %H:%M:%S"
    out: list[str] = []
    for i, w in enumerate(words):
        if w == "PID":
            out.append(str(pid))
        elif w == "SERIAL":
            out.append(str(serial))
        elif w == "WINDOW":
            out += [*time.strftime(fmt, time.gmtime(sec)).split(), "-te"]
            out += time.strftime(fmt, time.gmtime(sec + 20)).split()
        elif w in ("START", "END"):
            out += time.strftime(fmt, time.gmtime(sec)).split()
        else:
            out.append(w)
        del i
    return out


def _theirs(path: Path, words: list[str], mode: str) -> bytes:
    proc = subprocess.run(
        [AUSEARCH, "-if", str(path), *MODES[mode], *words],
        capture_output=True,
        env=ENV,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout


def _criteria_of(words: list[str]) -> SearchCriteria:
    args = build_parser(["audit", "search"]).parse_args(["audit", "search", *words])
    return _criteria(args, None)


def _native_fd(path: Path, crit: SearchCriteria, mode: str) -> bytes:
    with tempfile.TemporaryFile() as fh:
        native.write_decided([LogInput(str(path))], crit, ReadStats(), mode, fh.fileno())
        fh.seek(0)
        return fh.read()


def _formatted(events: Iterator[object], mode: str) -> bytes:
    return "".join(format_event(e, mode) for e in events).encode()  # type: ignore[arg-type]


@pytest.mark.parametrize("log", ["r40-mixed", "r140-enriched", "project-raw"])
@pytest.mark.parametrize("words", FILTERS, ids=lambda w: " ".join(w) or "all")
def test_output_is_ausearchs(logs: dict[str, Path], utc: None, log: str, words: list[str]) -> None:
    assert native.available(), "the compiled core is not built (scripts/setup.sh builds it)"
    path = logs[log]
    words = _expand(words, path)
    crit = _criteria_of(words)
    inputs = [LogInput(str(path))]
    for mode in MODES:
        theirs = _theirs(path, words, mode)
        exact = _formatted(scan_exact(inputs, crit, ReadStats()), mode)
        assert exact == theirs, f"Python engine, {mode}"
        core = _formatted(native.scan_events(inputs, crit, ReadStats()), mode)
        assert core == theirs, f"compiled core's events, {mode}"
        if mode != "interpret" or native.interprets():
            assert _native_fd(path, crit, mode) == theirs, f"compiled core writing, {mode}"


@pytest.mark.parametrize(
    "words",
    [
        ["-m", "AVC", "-c", "qemu-kvm"],
        ["-k", "exec"],
        ["-m", "SYSCALL", "-i"],
        ["--raw", "-sv", "no"],
    ],
    ids=lambda w: " ".join(w),
)
def test_the_command_prints_ausearchs_bytes(logs: dict[str, Path], words: list[str]) -> None:
    path = logs["r40-mixed"]
    flags = [w for w in words if w in ("-i", "--raw")]
    rest = [w for w in words if w not in flags]
    mode = "interpret" if "-i" in flags else "raw" if "--raw" in flags else "default"
    ours = subprocess.run(
        [SVIRT, "audit", "search", "-if", str(path), *words],
        capture_output=True,
        env={**os.environ, **ENV},
        check=False,
    )
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == _theirs(path, rest, mode)


def test_filters_cover_the_logs(logs: dict[str, Path], utc: None) -> None:
    """The filters are not vacuous: most of them select something on every log."""
    empty = 0
    for log, path in logs.items():
        for words in FILTERS:
            if not _theirs(path, _expand(words, path), "raw"):
                empty += 1
                assert log == "project-raw" or words[:2] != ["-m", "AVC"]
    assert len(FILTERS) >= 30
    assert empty < len(FILTERS) * len(logs) // 4


ID_KINDS_LOG = [
    (
        "type=DAEMON_START msg=audit(1700000000.001:1): op=start ver=3.0.9 "
        "format=enriched kernel=6.1.0 auid=4294967295 pid=700 uid=0 ses=4294967295 "
        "subj=system_u:system_r:auditd_t:s0 res=success"
    ),
    (
        "type=LOGIN msg=audit(1700000001.002:2): pid=800 uid=0 "
        "subj=system_u:system_r:sshd_t:s0-s0:c0.c1023 old-auid=4294967295 auid=1000 "
        "tty=(none) old-ses=4294967295 ses=3 res=1"
    ),
    (
        "type=USER_LOGIN msg=audit(1700000002.003:3): pid=800 uid=0 auid=1000 ses=3 "
        "subj=system_u:system_r:sshd_t:s0-s0:c0.c1023 msg='op=login id=1000 "
        'exe="/usr/sbin/sshd" hostname=h addr=10.0.0.1 terminal=/dev/pts/0 res=success\''
    ),
    (
        "type=USER_LOGIN msg=audit(1700000002.004:4): pid=801 uid=0 auid=4294967295 "
        "ses=4294967295 subj=system_u:system_r:sshd_t:s0-s0:c0.c1023 msg='op=login "
        'acct="(unknown)" exe="/usr/sbin/sshd" hostname=? addr=10.0.0.2 terminal=ssh '
        "res=failed'"
    ),
    (
        "type=ANOM_ABEND msg=audit(1700000003.005:5): auid=1000 uid=1000 gid=1000 ses=3 "
        'subj=unconfined_u:unconfined_r:unconfined_t:s0 pid=900 comm="crash" '
        'exe="/usr/bin/crash" sig=11 res=1'
    ),
    (
        "type=ANOM_PROMISCUOUS msg=audit(1700000004.006:6): dev=eth0 prom=256 old_prom=0 "
        "auid=1000 uid=0 gid=0 ses=3"
    ),
    (
        "type=TTY msg=audit(1700000005.007:7): tty pid=901 uid=1000 auid=1000 ses=3 "
        'major=136 minor=0 comm="bash" data=6C730D'
    ),
    (
        "type=INTEGRITY_DATA msg=audit(1700000006.008:8): pid=902 uid=0 auid=1000 ses=3 "
        "subj=unconfined_u:unconfined_r:unconfined_t:s0 op=appraise_data "
        'cause=invalid-hash comm="cat" name="/etc/x" dev="vda1" ino=5 res=0'
    ),
    (
        "type=ADD_GROUP msg=audit(1700000007.009:9): pid=903 uid=0 auid=1000 ses=3 "
        'subj=unconfined_u:unconfined_r:unconfined_t:s0 msg=\'op=add-group acct="g1" '
        'exe="/usr/sbin/groupadd" id=1005 hostname=h addr=? terminal=pts/0 res=success\''
    ),
    (
        "type=CONFIG_CHANGE msg=audit(1700000008.010:10): auid=1000 ses=3 "
        'subj=unconfined_u:unconfined_r:unconfined_t:s0 op=add_rule key="k1" list=4 res=1'
    ),
    (
        "type=NETFILTER_CFG msg=audit(1700000009.011:11): table=filter family=2 "
        "entries=10 op=xt_replace pid=904 subj=system_u:system_r:iptables_t:s0 "
        'comm="iptables"'
    ),
    (
        "type=SYSCALL msg=audit(1700000009.011:11): arch=c000003e syscall=54 success=yes "
        "exit=0 a0=3 a1=0 a2=40 a3=1 items=0 ppid=1 pid=904 auid=1000 uid=0 gid=0 euid=0 "
        'suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="iptables" '
        'exe="/usr/sbin/xtables-nft-multi" subj=system_u:system_r:iptables_t:s0 '
        "key=(null)"
    ),
    (
        "type=NETFILTER_CFG msg=audit(1700000010.012:12): table=nat family=2 entries=0 "
        'op=register pid=1 subj=system_u:system_r:init_t:s0 comm="systemd"'
    ),
    (
        "type=USER_CMD msg=audit(1700000011.013:13): pid=905 uid=1000 auid=1000 ses=3 "
        'subj=unconfined_u:unconfined_r:unconfined_t:s0 msg=\'cwd="/home/u" cmd=6C73 '
        'exe="/usr/bin/sudo" terminal=pts/0 res=success\'\x1dUID="svirt-nobody" AUID="unset"'
    ),
    (
        "type=FEATURE_CHANGE msg=audit(1700000012.014:14): pid=906 uid=0 auid=1000 ses=3 "
        'subj=unconfined_u:unconfined_r:unconfined_t:s0 comm="x" exe="/x" '
        "feature=loginuid_immutable old=0 new=1 old_lock=0 new_lock=1 res=1"
    ),
]
ID_FILTERS = [
    *(["-" + o, v] for o in ("ui", "ul", "ua", "ue") for v in ("0", "1000", "4294967295", "root")),
    *(["-" + o, v] for o in ("gi", "ge", "ga") for v in ("0", "1000", "1005", "root")),
    ["-ul", "-1"],
    ["-ui", "0", "-ul", "1000"],
    # in command-line order, a later option overrides part of an earlier -ua/-ga
    ["-ua", "1000", "-ui", "0"],
    ["-ui", "0", "-ua", "1000"],
    ["-ga", "0", "-gi", "1000"],
]


def test_ids_on_every_record_kind_that_carries_them(tmp_path: Path, utc: None) -> None:
    """Every record kind ausearch takes a uid, auid, euid or gid from (DAEMON_START, LOGIN,
    USER_LOGIN with its uid inside msg, ADD_GROUP's id=, ANOM_ABEND/PROMISCUOUS, TTY and
    INTEGRITY read as uid 0, CONFIG_CHANGE, NETFILTER_CFG alone and with its SYSCALL, an
    ENRICHED USER_CMD, FEATURE_CHANGE): the same bytes as ausearch in every engine."""
    log = tmp_path / "ids.log"
    log.write_text("\n".join(ID_KINDS_LOG) + "\n")
    inputs = [LogInput(str(log))]
    selected = 0
    for words in ID_FILTERS:
        crit = _criteria_of(words)
        for mode in MODES:
            theirs = _theirs(log, words, mode)
            selected += bool(theirs)
            assert _formatted(scan_exact(inputs, crit, ReadStats()), mode) == theirs, words
            assert _native_fd(log, crit, mode) == theirs, (words, mode)
    assert selected >= len(ID_FILTERS) * len(MODES) * 2 // 3


SYSCALL_KINDS_LOG = [
    (
        "type=USER_AVC msg=audit(1700000000.001:1): pid=1 uid=0 auid=4294967295 "
        "ses=4294967295 subj=system_u:system_r:init_t:s0 msg='avc:  denied  { start } for "
        "auid=-1 uid=0 gid=0 scontext=system_u:system_r:init_t:s0 "
        'tcontext=system_u:object_r:x_t:s0 tclass=service exe="/usr/lib/systemd/systemd" '
        "sauid=0 hostname=? addr=? terminal=?'"
    ),
    (
        "type=SYSCALL msg=audit(1700000000.002:2): arch=c000003e syscall=0 success=yes "
        "exit=3 a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=2 auid=0 uid=0 gid=0 euid=0 suid=0 "
        'fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="cat" exe="/usr/bin/cat" '
        "subj=unconfined_u:unconfined_r:unconfined_t:s0 key=(null)"
    ),
    (
        "type=SYSCALL msg=audit(1700000000.003:3): arch=40000003 syscall=3 success=yes "
        "exit=3 a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=3 auid=0 uid=0 gid=0 euid=0 suid=0 "
        'fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="cat32" exe="/usr/bin/cat32" '
        "subj=unconfined_u:unconfined_r:unconfined_t:s0 key=(null)"
    ),
    (
        "type=SECCOMP msg=audit(1700000000.004:4): auid=0 uid=0 gid=0 ses=1 "
        'subj=unconfined_u:unconfined_r:unconfined_t:s0 pid=5 comm="x" exe="/usr/bin/x" '
        "sig=31 arch=c000003e syscall=2 compat=0 ip=0x1 code=0x0"
    ),
    (
        "type=SECCOMP msg=audit(1700000000.005:5): auid=0 uid=0 gid=0 ses=1 "
        'subj=unconfined_u:unconfined_r:unconfined_t:s0 pid=6 comm="y" exe="/usr/bin/y" '
        "sig=31 arch=40000003 syscall=5 compat=1 ip=0x1 code=0x0"
    ),
    (
        "type=AVC msg=audit(1700000000.006:6): avc:  denied  { read } for  pid=7 "
        'comm="qemu" name="x" dev="sda" ino=1 scontext=system_u:system_r:svirt_t:s0:c1,c2 '
        "tcontext=system_u:object_r:etc_t:s0 tclass=file permissive=0"
    ),
    (
        "type=SYSCALL msg=audit(1700000000.006:6): arch=c000003e syscall=257 success=no "
        "exit=-13 a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=7 auid=0 uid=0 gid=0 euid=0 suid=0 "
        'fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="qemu" exe="/usr/bin/qemu" '
        "subj=system_u:system_r:svirt_t:s0:c1,c2 key=(null)"
    ),
]
SYSCALL_FILTERS = [
    ["-sc", v] for v in ("0", "read", "2", "open", "3", "5", "openat", "257", "execve", "999")
]


EXIT_LOG = [
    *SYSCALL_KINDS_LOG,
    (
        "type=SYSCALL msg=audit(1700000001.001:21): arch=c000003e syscall=0 success=yes "
        "exit=13 a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=21 auid=0 uid=0 gid=0 euid=0 "
        'suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="c" exe="/usr/bin/c" '
        "subj=unconfined_u:unconfined_r:unconfined_t:s0 key=(null)"
    ),
    (
        "type=SYSCALL msg=audit(1700000001.002:22): arch=c000003e syscall=0 success=yes "
        "a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=22 auid=0 uid=0 gid=0 euid=0 suid=0 "
        'fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="c" exe="/usr/bin/c" '
        "subj=unconfined_u:unconfined_r:unconfined_t:s0 key=(null)"
    ),
    (
        "type=SYSCALL msg=audit(1700000001.003:23): arch=c000003e syscall=0 exit=0x10 "
        "a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=23 auid=0 uid=0 gid=0 euid=0 suid=0 "
        'fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="c" exe="/usr/bin/c" '
        "subj=unconfined_u:unconfined_r:unconfined_t:s0 key=(null)"
    ),
    (
        "type=SYSCALL msg=audit(1700000001.004:24): arch=c000003e syscall=0 exit=-2 "
        "success=no a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=24 auid=0 uid=0 gid=0 euid=0 "
        'suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="c" exe="/usr/bin/c" '
        "subj=unconfined_u:unconfined_r:unconfined_t:s0 key=(null)"
    ),
    (
        "type=USER_AVC msg=audit(1700000001.005:25): pid=1 uid=0 auid=4294967295 "
        "ses=4294967295 subj=system_u:system_r:init_t:s0 msg='avc:  denied  { start } for "
        "auid=-1 uid=0 gid=0 exit=13 res=0'"
    ),
]
EXIT_FILTERS = [
    *(["-e", v] for v in ("13", "EACCES", "eacces", "-13", "16", "0x10", "015", "0", "-2")),
    *(["-e", v] for v in ("ENOENT", "3", "0x", "3x")),
    ["-e", "-2", "-sv", "no"],
    ["-e", "3", "-sv", "yes"],
    ["-e", "-13", "-sc", "openat"],
]


def test_exit_on_every_record_kind(tmp_path: Path, utc: None) -> None:
    """-e against SYSCALL records with and without exit=, exit= before success=, a hex
    exit, and a USER_AVC naming an exit (which ausearch ignores): ausearch's bytes."""
    log = tmp_path / "exits.log"
    log.write_text("\n".join(EXIT_LOG) + "\n")
    inputs = [LogInput(str(log))]
    selected = 0
    for words in EXIT_FILTERS:
        crit = _criteria_of(words)
        for mode in MODES:
            theirs = _theirs(log, words, mode)
            selected += bool(theirs)
            assert _formatted(scan_exact(inputs, crit, ReadStats()), mode) == theirs, words
            assert _native_fd(log, crit, mode) == theirs, (words, mode)
    assert selected >= len(EXIT_FILTERS) * len(MODES) // 2


def test_syscall_on_every_record_kind_that_carries_it(tmp_path: Path, utc: None) -> None:
    """-sc on SYSCALL and SECCOMP records of two arches and on records without a syscall
    (which ausearch holds as syscall 0): a number matches any arch, a name only this
    machine's; the same bytes as ausearch in every engine."""
    log = tmp_path / "syscalls.log"
    log.write_text("\n".join(SYSCALL_KINDS_LOG) + "\n")
    inputs = [LogInput(str(log))]
    selected = 0
    for words in SYSCALL_FILTERS:
        crit = _criteria_of(words)
        for mode in MODES:
            theirs = _theirs(log, words, mode)
            selected += bool(theirs)
            assert _formatted(scan_exact(inputs, crit, ReadStats()), mode) == theirs, words
            assert _native_fd(log, crit, mode) == theirs, (words, mode)
    assert selected >= len(SYSCALL_FILTERS) * len(MODES) * 2 // 3


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["-ui", "no-such-user-x"], "user ID is non-numeric and unknown (no-such-user-x)"),
        (["-ul", "unset"], "login user ID is non-numeric and unknown (unset)"),
        (["-gi", "no-such-group-x"], "group ID is non-numeric and unknown (no-such-group-x)"),
        (["-ui", "-1"], "user ID must be a number or a name, was '-1'"),
    ],
)
def test_unknown_ids_are_refused(logs: dict[str, Path], words: list[str], message: str) -> None:
    """As in ausearch, an unknown name is an error (argparse's usage and one error line)."""
    proc = subprocess.run(
        [SVIRT, "audit", "search", "-if", str(logs["r40-mixed"]), *words],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert not proc.stdout


def test_long_records_are_cut_as_ausearch_cuts_them(tmp_path: Path, utc: None) -> None:
    """ausearch reads a record into 8 970 bytes: a longer line is cut to its first 8 969
    and the rest of it is dropped. svirt does the same in every engine (gzip included),
    and counts lines over 1 MiB (never held whole in memory) and non-records."""
    user = "type=USER_CMD msg=audit({}): pid=1 uid=0 auid=0 ses=1 msg='cmd={} res=success'"
    start = (
        'type=USER_START msg=audit(99.000:1): pid=1 uid=0 auid=0 ses=1 msg=\'op=x acct="root" '
        'exe="/x" hostname=? addr=? terminal=? res=success\''
    )
    lines = [
        start,
        user.format("100.000:2", "41" * 5000) + '\x1dUID="root"',
        "x" * 20000,
        user.format("100.500:4", "42" * (3 << 20)),
        start.replace("USER_START", "USER_END").replace("99.000:1", "101.000:3"),
    ]
    log = tmp_path / "long.log"
    log.write_text("\n".join(lines) + "\n")
    packed = tmp_path / "long.log.gz"
    subprocess.run(["gzip", "-k", str(log)], check=True)
    crit = SearchCriteria()
    for mode in MODES:
        theirs = _theirs(log, [], mode)
        assert len(theirs.splitlines()) >= 4
        stats = ReadStats()
        assert _formatted(scan_exact([LogInput(str(log))], crit, stats), mode) == theirs
        assert stats.malformed == 2
        assert _formatted(scan_exact([LogInput(str(packed))], crit, ReadStats()), mode) == theirs
        stats = ReadStats()
        assert _formatted(native.scan_events([LogInput(str(log))], crit, stats), mode) == theirs
        assert stats.malformed == 2
        assert any("line too long" in e for e in stats.malformed_examples)
        assert _native_fd(log, crit, mode) == theirs


def test_records_far_apart_are_one_event_as_in_ausearch(tmp_path: Path, utc: None) -> None:
    """An AVC whose SYSCALL and PROCTITLE come 64 KiB later (but within 2 seconds) is one
    event for ausearch; the compiled core reads every line, so it is one for svirt too
    (the old look-around engine lost the SYSCALL beyond 32 KiB)."""
    avc = (
        'type=AVC msg=audit(1000.100:7): avc:  denied  { read } for  pid=42 comm="qemu-kvm" '
        'name="d.img" dev="dm-0" ino=5 scontext=system_u:system_r:svirt_t:s0:c1,c2 '
        "tcontext=system_u:object_r:virt_image_t:s0 tclass=file permissive=0"
    )
    syscall = (
        "type=SYSCALL msg=audit(1000.100:7): arch=c000003e syscall=257 success=no exit=-13 "
        "a0=ffffff9c a1=7f00 a2=80000 a3=0 items=1 ppid=1 pid=42 auid=4294967295 uid=107 gid=107 "
        "euid=107 suid=107 fsuid=107 egid=107 sgid=107 fsgid=107 tty=(none) ses=4294967295 "
        'comm="qemu-kvm" exe="/usr/libexec/qemu-kvm" subj=system_u:system_r:svirt_t:s0:c1,c2 '
        "key=(null)"
    )
    filler = [
        f"type=USER_START msg=audit(1000.{200 + i // 1000:03d}:{100 + i}): pid=1 uid=0 auid=0 "
        f'ses=1 msg=\'op=x acct="root" exe="/x" hostname=? addr=? terminal=? res=success\''
        for i in range(600)
    ]
    proctitle = "type=PROCTITLE msg=audit(1000.100:7): proctitle=71656D752D6B766D"
    log = tmp_path / "far.log"
    log.write_text("\n".join([avc, *filler, syscall, proctitle]) + "\n")
    assert log.stat().st_size > 64 * 1024
    words = ["-m", "AVC"]
    crit = _criteria_of(words)
    for mode in MODES:
        theirs = _theirs(log, words, mode)
        assert b"type=SYSCALL" in theirs or b"syscall=openat" in theirs
        ours = _formatted(native.scan_events([LogInput(str(log))], crit, ReadStats()), mode)
        assert ours == theirs
        assert _formatted(scan_exact([LogInput(str(log))], crit, ReadStats()), mode) == theirs
