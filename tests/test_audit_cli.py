"""``svirt audit search|explain`` as commands: outputs, exit codes, errors, stdin, pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import svirt.cli.audit as cli_audit
from fsutil import timezone
from svirt.cli.main import main
from test_audit_reader import load_generator

DATA = Path(__file__).parent / "data" / "audit"
SEED = DATA / "seed_000_raw.log"
SEED_TIME = 1764924581
SVIRT = [str(Path(sys.executable).parent / "svirt")]


@pytest.fixture
def pacific() -> Iterator[None]:
    with timezone("America/Los_Angeles"):
        yield


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_default_output_is_ausearchs(pacific: None, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["audit", "search", "-if", str(SEED), "-m", "AVC", "-c", "qemu-kvm"], capsys)
    assert rc == 0
    assert out == (DATA / "seed_000_ausearch_default.txt").read_text()


def test_interpret_and_raw(pacific: None, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["audit", "search", "-if", str(DATA / "seed_000_enriched.log"), "-i"], capsys)
    assert rc == 0 and out == (DATA / "seed_000_ausearch_i_c_locale.txt").read_text()
    rc, out, _ = run(
        ["audit", "search", "--raw", "-if", str(DATA / "seed_000_enriched.log")], capsys
    )
    # ausearch ends every record of an ENRICHED event with 0x1D, a bare one where the
    # record has no enriched part
    ausearch = subprocess.run(
        ["ausearch", "--raw", "-if", str(DATA / "seed_000_enriched.log")],
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "\x1d\n" in ausearch
    assert rc == 0 and out == ausearch


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["audit", "search", "--json", "-if", str(SEED), "-m", "avc"], capsys)
    assert rc == 0
    (ev,) = json.loads(out)
    assert ev["serial"] == 15655 and ev["types"] == ["AVC", "SYSCALL", "PROCTITLE"]
    assert ev["time"] == "2025-12-05T08:49:41.131Z"
    avc = ev["records"][0]
    assert avc["fields"]["tcontext"] == "system_u:object_r:virt_image_t:s0"
    assert avc["source"] == str(SEED) and avc["offset"] == 0


def test_no_matches_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["audit", "search", "-if", str(SEED), "-m", "USER_AVC"], capsys)
    assert (rc, out, err) == (1, "", "<no matches>\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "NOPE"], "unknown message type 'NOPE'"),
        (["-p", "12a"], "process id must be a numeric value"),
        (["-sv", "maybe"], "success value must be 'yes' or 'no'"),
        (["-i", "--raw"], "not allowed with argument"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "search", "-if", str(SEED), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--raw", "--json"], "error: --raw and --json are two different outputs"),
        (["-ts", "13/45/26"], "error: invalid start date '13/45/26'"),
        (["-if", "/nonexistent/audit.log"], "error: /nonexistent/audit.log: cannot read audit log"),
    ],
)
def test_reported_errors_exit_1(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", "search", *(["-if", str(SEED)] if "-if" not in args else []), *args]
    rc, _, err = run(argv, capsys)
    assert rc == 1 and err.startswith(message) and err.count("\n") == 1


def test_relative_times_use_the_injected_clock(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_audit, "clock", lambda: SEED_TIME + 120.0)
    assert run(["audit", "search", "-if", str(SEED), "-ts", "recent"], capsys)[0] == 0
    monkeypatch.setattr(cli_audit, "clock", lambda: SEED_TIME + 3600.0)
    assert run(["audit", "search", "-if", str(SEED), "-ts", "recent"], capsys)[0] == 1
    assert run(["audit", "search", "-if", str(SEED), "-te", "recent"], capsys)[0] == 0


def test_malformed_lines_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"\x00garbage\n" + SEED.read_bytes() + b"type=AVC msg=audit(12\n")
    for extra in ([], ["-m", "AVC"]):
        rc, out, err = run(["audit", "search", "-if", str(log), *extra], capsys)
        assert rc == 0 and "15655" in out
        assert f"warning: skipped 2 malformed lines (first: {log}:1" in err or (
            "warning: skipped 2 malformed lines" in err and str(log) in err
        )


def test_stdin_pipe_and_dash(tmp_path: Path) -> None:
    data = SEED.read_bytes()
    env = {**os.environ, "TZ": "UTC"}
    for args in (["-if", "-"], []):
        proc = subprocess.run(
            [*SVIRT, "audit", "search", "--raw", "-m", "AVC", *args],
            input=data,
            capture_output=True,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == data


def test_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    gen = load_generator()
    log = tmp_path / "audit.log"
    with log.open("wb") as fh:
        gen.generate(fh, events=4000, seed=3)
    cmd = " ".join([*SVIRT, "audit", "search", "-if", str(log), "-m", "SYSCALL", "-i"])
    proc = subprocess.run(
        ["sh", "-c", f"{cmd} | head -n 2"], capture_output=True, text=True, check=False
    )
    assert proc.stdout.count("\n") == 2
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr


def test_directory_input_reads_the_rotated_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = SEED.read_bytes().splitlines(keepends=True)
    (tmp_path / "audit.log.1").write_bytes(lines[0])
    (tmp_path / "audit.log").write_bytes(b"".join(lines[1:]))
    rc, out, _ = run(["audit", "search", "--raw", "-if", str(tmp_path), "-a", "15655"], capsys)
    assert rc == 0 and out.encode() == SEED.read_bytes()


def test_help_lists_audit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "search", "--help"])
    out = capsys.readouterr().out
    for opt in ("-if", "-m", "-c", "-p", "-x", "-k", "-sv", "-ts", "-te", "-i", "--raw", "--json"):
        assert opt in out
