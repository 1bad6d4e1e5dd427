"""Hostile XML is refused quickly, in one line, with bounded memory (issue 2)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from svirt.domain import MAX_XML_BYTES, parse_domain, parse_domain_file
from svirt.errors import XMLError

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>\n<domain type='kvm'><name>&lol9;</name></domain>"
)


def test_billion_laughs_refused() -> None:
    with pytest.raises(XMLError, match="refusing XML with a DTD"):
        parse_domain(BILLION_LAUGHS)


def test_external_entity_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOP SECRET")
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>'
        "<domain type='kvm'><name>&x;</name></domain>"
    )
    with pytest.raises(XMLError) as info:
        parse_domain(xml)
    assert "TOP SECRET" not in str(info.value)


def test_external_dtd_refused() -> None:
    xml = (
        '<?xml version="1.0"?><!DOCTYPE domain SYSTEM "http://example.org/x.dtd">'
        "<domain type='kvm'><name>x</name></domain>"
    )
    with pytest.raises(XMLError, match="refusing XML"):
        parse_domain(xml)


def test_undeclared_entity_is_malformed() -> None:
    with pytest.raises(XMLError, match="malformed XML: undefined entity"):
        parse_domain("<domain type='kvm'><name>&foo;</name></domain>")


def test_50mb_file_refused_without_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    with big.open("wb") as fh:
        fh.write(b"<domain type='kvm'><name>x</name><description>")
        fh.seek(50 * 1024 * 1024)
        fh.write(b"</description></domain>")
    with pytest.raises(XMLError) as info:
        parse_domain_file(big)
    msg = str(info.value)
    assert msg.startswith(f"{big}: XML error: document is ")
    assert f"larger than the {MAX_XML_BYTES}-byte limit" in msg


def test_50mb_string_refused() -> None:
    with pytest.raises(XMLError, match="larger than the"):
        parse_domain("<domain>" + " " * (50 * 1024 * 1024) + "</domain>")


def test_big_file_memory_bounded(tmp_path: Path) -> None:
    """A separate process parsing a 50 MB file keeps its peak RSS far below 50 MB."""
    big = tmp_path / "big.xml"
    big.write_bytes(
        b"<domain type='kvm'><name>x</name><d>" + b"A" * (50 * 1024 * 1024) + b"</d></domain>"
    )
    code = (
        "import resource, sys\n"
        "from svirt.domain import parse_domain_file\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    parse_domain_file(sys.argv[1])\nexcept Exception as e:\n    print(e)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(big)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "larger than the" in out[0]
    assert int(out[1]) < 20 * 1024  # KiB of peak RSS growth
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
