"""``svirt verify NAME...`` and ``svirt verify --html FILE`` (issue 14).

The page test runs two real QEMU guests under svirt, relabels one resource by hand (the
Fedora sVirt page's ``chcon``), writes the page, opens it in the real headless Chromium
(Debian's ``chromium``) and checks the SCREENSHOT: the colour at the centre of every
cell must be the fill of the decision ``svirt verify --json`` gives for that VM on that
resource. The DOM Chromium built (``--dump-dom``) must carry each cell's reason on hover
(``title``), the user data must stay text (a disk path holds ``<script>...</script>``),
and a page with one cell flipped must fail the same check.

Chromium runs as root here, so with ``--no-sandbox``; each run has its own
``--user-data-dir`` in the test's directory, its own process group, and is stopped by
that group's id (the browser's pid) if it outlives its run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

import svirt
from fsutil import image_dir
from svirt.cli.main import main
from svirt.host.selinux import getfilecon, setfilecon
from svirt.policy.report_html import FILL, render_page
from svirt.policy.verify import CellAccess
from test_verify import POLICY, VM1_CATS, VM2_CATS, disk, image_label, live_xml
from test_verify import Host as FakeHost

WINDOW = (1000, 700)

# --- Chromium, PNG and DOM helpers ------------------------------------------------------


def chromium_binary() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: run scripts/setup.sh (it installs Debian's chromium)"
        )
    return path


def run_chromium(workdir: Path, *args: str) -> str:
    """One headless Chromium run; returns its stdout. Nothing survives it."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
    proc = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",  # root: Chromium refuses to start sandboxed
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--force-color-profile=srgb",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        # its dconf/fontconfig caches go to the profile too, not to root's home
        env={
            **os.environ,
            "HOME": str(profile),
            "XDG_CACHE_HOME": str(profile / "cache"),
            "XDG_CONFIG_HOME": str(profile / "config"),
        },
    )
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        # the browser's helpers share its process group, whose id is its pid
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out


class Png:
    """An 8-bit RGB or RGBA PNG decoded with zlib (the filters of the PNG spec)."""

    def __init__(self, data: bytes) -> None:
        assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
        pos, idat = 8, b""
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind = data[pos + 4 : pos + 8]
            body = data[pos + 8 : pos + 8 + length]
            if kind == b"IHDR":
                self.width, self.height, depth, colour, _, _, interlace = struct.unpack(
                    ">IIBBBBB", body
                )
                assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
                self.bpp = 3 if colour == 2 else 4
            elif kind == b"IDAT":
                idat += body
            pos += 12 + length
        raw = zlib.decompress(idat)
        stride = self.width * self.bpp
        rows: list[bytearray] = []
        prev = bytearray(stride)
        for y in range(self.height):
            base = y * (stride + 1)
            ftype, line = raw[base], bytearray(raw[base + 1 : base + 1 + stride])
            bpp = self.bpp
            if ftype == 1:
                for i in range(bpp, stride):
                    line[i] = (line[i] + line[i - bpp]) & 0xFF
            elif ftype == 2:
                line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
            elif ftype == 3:
                for i in range(stride):
                    left = line[i - bpp] if i >= bpp else 0
                    line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
            elif ftype == 4:
                for i in range(stride):
                    a = line[i - bpp] if i >= bpp else 0
                    b = prev[i]
                    c = prev[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                    line[i] = (line[i] + pred) & 0xFF
            else:
                assert ftype == 0, f"bad PNG filter {ftype}"
            rows.append(line)
            prev = line
        self.rows = rows

    def rgb(self, x: int, y: int) -> str:
        i = x * self.bpp
        r, g, b = self.rows[y][i : i + 3]
        return f"#{r:02x}{g:02x}{b:02x}"


class Dom(HTMLParser):
    """The cells, every tag and all text of the DOM Chromium built."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], dict[str, str]] = {}
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = {k: v or "" for k, v in attrs}
        if tag == "div" and "cell" in a.get("class", "").split():
            self.cells[(a["data-subject"], a["data-domain"], a["data-path"])] = a

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def screenshot_mismatches(
    workdir: Path, page: Path, matrix: list[dict[str, object]]
) -> list[tuple[str, str, str, str, str]]:
    """Open ``page`` in Chromium; for each JSON cell, compare the screenshot's colour at
    the cell's centre with the fill of its decision. Returns the mismatches."""
    png = workdir / f"{page.stem}.png"
    run_chromium(
        workdir,
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={png}",
        page.as_uri(),
    )
    shot = Png(png.read_bytes())
    assert (shot.width, shot.height) == WINDOW
    dom = Dom(page.read_text())  # the geometry the page declares; the pixels must agree
    bad = []
    for cell in matrix:
        key = (str(cell["subject"]), str(cell["domain"]), str(cell["path"]))
        attrs = dom.cells[key]
        x, y = int(attrs["data-cx"]), int(attrs["data-cy"])
        assert x < WINDOW[0] and y < WINDOW[1], "the matrix must fit the window"
        want = FILL[CellAccess(cell["access"])]
        got = shot.rgb(x, y)
        if got != want:
            bad.append((*key, want, got))
    return bad


# --- the page, in the real browser, on real guests ------------------------------------


@pytest.fixture
def imgdir() -> Iterator[Path]:
    """Images where the QEMU user can reach them (pytest's tmp dirs are 0700)."""
    with image_dir("svirt-html-") as d:
        yield d


def _image(path: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"")
    os.truncate(path, 1 << 20)
    return path


def _disk(path: Path, target: str, *, cdrom: bool = False) -> str:
    return (
        f"<disk type='file' device='{'cdrom' if cdrom else 'disk'}'>"
        f"<driver name='qemu' type='raw'/><source file={quoteattr(str(path))}/>"
        f"<target dev='{target}' bus='{'ide' if cdrom else 'virtio'}'/>"
        f"{'<readonly/>' if cdrom else ''}</disk>"
    )


def _vm(name: str, disks: list[str]) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices>{''.join(disks)}</devices></domain>"
    )


@pytest.mark.qemu
@pytest.mark.policy
@pytest.mark.chromium
def test_page_screenshot_matches_verify_json(
    imgdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromium_binary()  # fails (never skips) before any VM starts when it is missing
    conf = imgdir / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{imgdir / "state"}"\n'
        f'libvirt_run_dir = "{imgdir / "lv"}"\nvm_identity = "off"\n'
    )
    a, b = _image(imgdir / "a.img"), _image(imgdir / "b.img")
    iso = _image(imgdir / "install.iso")  # read-only: shared by both
    # user data with markup in it: a directory "<script>alert(1)<" and a file "script>.img"
    evil = _image(imgdir / "<script>alert(1)<" / "script>.img")
    assert str(evil).endswith("<script>alert(1)</script>.img")
    host = svirt.Host(conf)
    try:
        da = host.start(_vm("a", [_disk(a, "vda"), _disk(iso, "hdc", cdrom=True)]))
        db = host.start(
            _vm("b", [_disk(b, "vda"), _disk(evil, "vdb"), _disk(iso, "hdc", cdrom=True)])
        )
        # chcon: b's second disk gets a's categories (a reaches it, b cannot use it)
        image_a = da.labels.image
        assert image_a is not None and getfilecon(str(evil)) == db.labels.image
        setfilecon(str(evil), image_a)
        page = imgdir / "page.html"
        log = imgdir / "audit.log"
        pid = db.pid
        log.write_text(
            "type=AVC msg=audit(1764924581.131:15655): avc:  denied  { read write } for  "
            f'pid={pid} comm="qemu-system-x86" name="script>.img" dev="dm-0" ino=42 '
            f"scontext={db.labels.process} tcontext={image_a} tclass=file permissive=0\n"
        )
        capsys.readouterr()
        rc = main(
            [
                "verify",
                "--json",
                "--html",
                str(page),
                "--audit-log",
                str(log),
                "--config",
                str(conf),
            ]
        )
        out, err = capsys.readouterr()
        data = json.loads(out)
    finally:
        for d in host.domains():
            d.stop(force=True)
    assert rc == 1 and err == ""  # a reaches b's disk: isolation broken
    matrix = data["matrix"]
    cell = {(c["subject"], c["domain"], c["path"]): c for c in matrix}
    # the matrix: 2 VMs x (2 + 3) resources, and it agrees with verify's other lists
    assert {c["subject"] for c in matrix} == {"a", "b"} and len(matrix) == 2 * 5
    assert {c["access"] for c in matrix} == {"read-write", "read", "none"}
    (finding,) = data["findings"]
    assert (finding["subject"], finding["resource"]["path"]) == ("a", str(evil))
    hit = cell[("a", "b", str(evil))]
    assert hit["access"] == "read-write" and hit["finding"]
    (denial,) = data["own_denials"]
    assert (denial["domain"], denial["resource"]["path"]) == ("b", str(evil))
    assert cell[("b", "b", str(evil))]["own_denial"]
    assert cell[("b", "b", str(evil))]["access"] == "none"
    for s in data["shared"]:
        for reader in s["readers"]:
            assert cell[(reader, s["resource"]["domain"], s["resource"]["path"])]["access"] in (
                "read",
                "read-write",
            )
    assert cell[("a", "b", str(b))]["access"] == "none"
    assert cell[("a", "b", str(b))]["dac"] == "read-write"  # same uid, mode 0644: DAC lets it

    # the screenshot agrees with the JSON, cell by cell
    assert len(set(FILL.values())) == len(FILL)
    assert screenshot_mismatches(imgdir, page, matrix) == []

    # the DOM Chromium built: every hover reason, the layers, user data as text only
    dump = run_chromium(imgdir, "--dump-dom", page.as_uri())
    dom = Dom(dump)
    assert set(dom.cells) == set(cell)
    for key, attrs in dom.cells.items():
        c = cell[key]
        assert attrs["data-access"] == c["access"]
        assert c["reason"] in attrs["title"] and c["dac_reason"] in attrs["title"]
        assert attrs["title"].startswith(f"SELinux: {c['access']}.")
    assert "Isolation broken: a (" in dom.cells[("a", "b", str(evil))]["title"]
    assert "DAC allows read-write" in dom.cells[("a", "b", str(b))]["title"]
    assert "script" not in dom.tags  # the path stayed text
    text = "".join(dom.text)
    assert "disk vdb script>.img" in text and str(evil) in text
    assert "SELinux is NOT enforced on this host" in text
    assert "Both layers, pair by pair" in text and "NOT isolated" in text
    # the denial timeline of audit explain: time, VM, what, cause, fix
    assert "Denial timeline" in text
    assert "qemu-system-x86 denied { read write } on file" in text
    assert "2025-12-05" in text or "2025-12-04" in text  # local time of 1764924581
    assert re.search(r"<tr><td>[^<]+</td><td>b</td><td>qemu-system-x86 denied", dump)
    assert "mcs: MCS: the process runs at" in text
    assert "never Do not use audit2allow" in text and "<shareable/>" in text
    assert "can read b's memory /proc/" in text

    # a page with one cell flipped fails the same check: the test sees a wrong picture
    flipped = imgdir / "flipped.html"
    html_text = page.read_text()
    target = f'data-subject="b" data-domain="a" data-path="{a}"'
    assert html_text.count(target) == 1 and cell[("b", "a", str(a))]["access"] == "none"
    start = html_text.rindex('<div class="cell no', 0, html_text.index(target))
    flipped.write_text(html_text[:start] + '<div class="cell rw' + html_text[start + 19 :])
    assert screenshot_mismatches(imgdir, flipped, matrix) == [
        ("b", "a", str(a), FILL[CellAccess.NONE], FILL[CellAccess.READ_WRITE])
    ]


# --- verify NAME... (live XML files, no QEMU) -----------------------------------------


@pytest.fixture
def three(tmp_path: Path) -> FakeHost:
    """vm1 and vm2 with their own images, vm3 whose image carries vm1's categories."""
    host = FakeHost(tmp_path)
    c = host.images / "vm3.qcow2"
    c.write_bytes(b"")
    setfilecon(c, image_label(f"s0:{VM1_CATS}"))
    host.write("vm3", live_xml("vm3", "c5,c6", disk(c, "vda")))
    return host


@pytest.mark.policy
def test_verify_names_checks_only_those_domains(
    three: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(three.config_file)
    rc = main(["verify", "--json", "--config", conf, "--policy", str(POLICY)])
    full = json.loads(capsys.readouterr().out)
    assert rc == 1 and [d["name"] for d in full["domains"]] == ["vm1", "vm2", "vm3"]
    assert [(f["subject"], f["resource"]["domain"]) for f in full["findings"]] == [("vm1", "vm3")]

    rc = main(["verify", "--json", "--config", conf, "--policy", str(POLICY), "vm2"])
    only = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in only["domains"]] == ["vm2"]
    assert only["findings"] == [] and only["own_denials"] == []
    assert only["selinux"]["policy_isolated"] is True
    assert {(p["subject"], p["target"]) for p in only["pairs"]} == {
        ("vm1", "vm2"),
        ("vm2", "vm1"),
        ("vm2", "vm3"),
        ("vm3", "vm2"),
    }
    assert {c["subject"] for c in only["matrix"]} == {"vm2"}
    assert len(only["matrix"]) == 3  # vm2 against every running domain's resources
    assert rc == 1  # SELinux is not enforced here and both "QEMUs" are this process

    # vm3's image has vm1's categories: asking for vm3 shows vm1 reaching it
    main(["verify", "--json", "--config", conf, "--policy", str(POLICY), "vm3"])
    mine = json.loads(capsys.readouterr().out)
    assert [(f["subject"], f["resource"]["domain"]) for f in mine["findings"]] == [("vm1", "vm3")]
    assert [o["domain"] for o in mine["own_denials"]] == ["vm3"]

    page = three.tmp / "vm2-vm3.html"
    main(["verify", "--config", conf, "--policy", str(POLICY), "--html", str(page), "vm2", "vm3"])
    out = capsys.readouterr().out
    assert "2 running domains" in out and "isolation BROKEN: 1 finding" in out
    assert out.endswith(f"isolation page written to {page}\n")
    dom = Dom(page.read_text())
    assert {s for s, _, _ in dom.cells} == {"vm2", "vm3"} and len(dom.cells) == 2 * 3


@pytest.mark.policy
def test_verify_unknown_name_is_libvirts_error(
    three: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    page = three.tmp / "page.html"
    rc = main(["verify", "--config", str(three.config_file), "--html", str(page), "vm1", "nope"])
    out, err = capsys.readouterr()
    assert (rc, out, err) == (1, "", "error: failed to get domain 'nope'\n")
    assert not page.exists()
    with pytest.raises(svirt.LaunchError, match="failed to get domain 'nope'"):
        svirt.Host(three.config_file).verify(["nope"])


@pytest.mark.policy
def test_verify_html_errors_change_nothing(
    three: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(three.config_file)
    page = three.tmp / "page.html"
    rc = main(["verify", "--config", conf, "--audit-log", "/nonexistent"])
    assert rc == 2 and "--audit-log needs --html FILE" in capsys.readouterr().err
    rc = main(["verify", "--config", conf, "--html", str(page), "--audit-log", "/nonexistent"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err == "error: /nonexistent: cannot read audit log: No such file or directory\n"
    assert not page.exists()
    missing = three.tmp / "no-such-dir" / "page.html"
    rc = main(["verify", "--config", conf, "--html", str(missing)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err == f"error: {missing}: cannot write the page: No such file or directory\n"
    assert not missing.parent.exists()
    assert sorted(p.name for p in three.tmp.iterdir()) == sorted(["state", "images", "svirt.conf"])


@pytest.mark.policy
def test_page_escapes_user_data_and_loads_nothing(three: FakeHost) -> None:
    evil = three.images / '"><script>alert(1)<'
    evil.mkdir()
    img = evil / "img onerror=alert(2)>.qcow2"
    img.write_bytes(b"")
    setfilecon(img, image_label(f"s0:{VM2_CATS}"))
    evil_disk = (
        f"<disk type='file' device='disk'><source file={quoteattr(str(img))}/>"
        "<target dev='vdb' bus='virtio'/></disk>"
    )
    three.write("vm2", live_xml("vm2", VM2_CATS, disk(three.b, "vda") + evil_disk))
    host = svirt.Host(three.config_file)
    report = host.verify(policy=POLICY)
    page = render_page(report)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/img onerror=alert(2)&gt;.qcow2" in page
    assert "&quot;&gt;&lt;script&gt;" in page
    dom = Dom(page)
    assert dom.tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "div",
        "p",
        "h1",
        "h2",
        "span",
        "code",
        "main",
        "ul",
        "li",
        "table",
        "tr",
        "th",
        "td",
        "b",
        "br",
    }
    assert (("vm1", "vm2", str(img))) in dom.cells  # the parser gets the real path back
    # no network, no script: the page's own policy forbids both
    assert "default-src 'none'" in page and "http" not in page.lower().replace("http-equiv", "")
