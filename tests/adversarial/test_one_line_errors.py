"""Bad input gives one line, never a traceback, and never hangs (issue 11, lower):
1,100 nested elements, a NUL in state_dir, a relative state_dir, a config that is
/dev/zero or a FIFO, damaged gzip logs, an unprivileged start, a broken pipe into
head, 20 MiB of blank lines in an audit log (bounded memory)."""

from __future__ import annotations

import gzip
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from adversarial.vmutil import image_dir

SVIRT = [sys.executable, "-c", "from svirt.cli.main import entry; entry()"]
AVC = (
    b"type=AVC msg=audit(1700000000.123:42): avc:  denied  { read } for  pid=4242 "
    b'comm="qemu-kvm" name="b.img" dev="vda" ino=12 '
    b"scontext=system_u:system_r:svirt_t:s0:c1,c2 "
    b"tcontext=system_u:object_r:svirt_image_t:s0:c3,c4 tclass=file permissive=0\n"
)


def run(
    args: list[str], *, timeout: float = 60.0, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SVIRT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[arg-type]
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(autouse=True)
def _entry(monkeypatch: pytest.MonkeyPatch) -> None:
    # `python -m svirt.cli.main` runs main() through the module's entry point.
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")


def conf(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "svirt.conf"
    p.write_text(body)
    return p


def test_deeply_nested_xml(tmp_path: Path) -> None:
    xml = tmp_path / "deep.xml"
    xml.write_text(
        "<domain type='kvm'><name>deep</name><memory>1024</memory><metadata>"
        + "<a>" * 1100
        + "</a>" * 1100
        + "</metadata></domain>"
    )
    c = conf(tmp_path, f'state_dir = "{tmp_path / "s"}"\n')
    for args in (["validate", str(xml)], ["label", "--config", str(c), str(xml)]):
        one_line_error(run(args), "Excessive depth in document")
    assert not (tmp_path / "s" / "domains" / "deep.xml").exists()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('state_dir = "/run/sv\\u0000irt"\n', "must not contain a NUL"),
        ('state_dir = "relative/state"\n', "must be an absolute path"),
    ],
)
def test_bad_state_dir(tmp_path: Path, body: str, needle: str) -> None:
    one_line_error(run(["list", "--config", str(conf(tmp_path, body))]), needle)


def test_config_that_never_ends(tmp_path: Path) -> None:
    one_line_error(run(["list", "--config", "/dev/zero"], timeout=20), "not a regular file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_line_error(run(["list", "--config", str(fifo)], timeout=20), "not a regular file")


def test_damaged_gzip_logs(tmp_path: Path) -> None:
    whole = gzip.compress(AVC * 200)
    truncated = tmp_path / "audit.log.1"
    truncated.write_bytes(whole[: len(whole) // 2])
    corrupt = tmp_path / "audit.log.2"
    corrupt.write_bytes(whole[:20] + b"\xff" * 64 + whole[84:])
    for f in (truncated, corrupt):
        for cmd in (["audit", "search", "-if", str(f)], ["audit", "explain", "-if", str(f)]):
            proc = run(cmd)
            assert "Traceback" not in proc.stderr, proc.stderr
            assert proc.returncode in (0, 1), proc
            said = [ln for ln in proc.stderr.splitlines() if ln and ln != "<no matches>"]
            assert len(said) == 1, proc.stderr
            assert "gzip" in proc.stderr, proc.stderr


def test_blank_lines_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with open(log, "wb") as fh:
        blank = b"\n" * (1 << 20)
        for i in range(20):
            fh.write(blank)
            if i == 10:
                fh.write(AVC)
    # Measured from a fresh parent, so no earlier child of this test session counts.
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(p.returncode)\nprint(p.stdout.count('denied'), 'malformed' in p.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *SVIRT, "audit", "search", "-m", "AVC", "-if", str(log)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split("\n")
    peak, rc, found = int(out[0]), int(out[1]), out[2]
    assert rc == 0 and found == "1 False", out
    # 653d5a9 held one Python object per blank line: 375 MB for these 20 MiB.
    assert peak < 200_000, f"peak RSS {peak} KiB"


def test_unprivileged_start() -> None:
    with image_dir() as d:
        xml = d / "vm.xml"
        xml.write_text("<domain type='qemu'><name>u</name><memory>1024</memory></domain>")
        xml.chmod(0o644)
        conf = d / "svirt.conf"
        conf.write_text(f'state_dir = "{d / "state"}"\n')
        conf.chmod(0o644)
        proc = run(["start", str(xml), "--config", str(conf)], user="nobody", cwd="/")
        one_line_error(proc, "svirt start must run as root")
        assert not (d / "state").exists()


def test_broken_pipe_into_head() -> None:
    """More output than a pipe holds (ls -Z of every file in /usr/bin), into a reader
    that leaves after one line."""
    many = sorted(str(p) for p in Path("/usr/bin").iterdir())
    cmd = shlex.join([*SVIRT, "ls", "-Z", *many]) + " | head -1"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
