"""`svirt validate` on every domain XML under tests/data/domains.

Each file's first comment says what it expects: ``expect: ok`` or
``expect-error: <text>`` (the one-line error must contain that text and name the file).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from svirt.cli.main import main

DOMAINS = Path(__file__).parent / "data" / "domains"
CONF = Path(__file__).parent / "data" / "selinux.conf"
FILES = sorted(DOMAINS.glob("*.xml"))


def expectation(path: Path) -> str | None:
    m = re.search(r"<!-- expect(?:-error)?: (.*?) -->", path.read_text(errors="replace"))
    assert m, f"{path.name} has no expectation comment"
    return None if m.group(0).startswith("<!-- expect: ") else m.group(1)


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_validate_data_file(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected_error = expectation(path)
    rc = main(["validate", "--config", str(CONF), str(path)])
    out, err = capsys.readouterr()
    if expected_error is None:
        assert rc == 0, err
        assert "valid" in out
    else:
        assert rc == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1, err  # one line, never a traceback
        assert lines[0].startswith(f"error: {path}: ")
        assert expected_error in lines[0]


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["validate", str(DOMAINS / "ok-dynamic.xml"), "--json", "--config", str(CONF)])
    assert rc == 0
    view = json.loads(capsys.readouterr().out)
    assert view["name"] == "vm-full"
    assert view["seclabels"][0]["model"] == "selinux"
    by_owner = {r["owner"]: r for r in view["resources"]}
    assert by_owner["disk vdc"]["flags"] == ["shareable"]
    assert by_owner["disk hdc"]["flags"] == ["readonly"]
    assert by_owner["disk vda layer 1"]["flags"] == ["readonly", "backing"]
    assert by_owner["disk vdb"]["seclabels"] == [
        {"model": "selinux", "relabel": False, "label": None}
    ]
    assert by_owner["disk vdd"]["flags"] == ["not-local"]


def test_probed_host_without_selinux_has_no_selinux_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No security_driver: probing finds SELinux off, so the stack is none + dac.
    conf = tmp_path / "probe.conf"
    conf.write_text("")
    rc = main(["validate", "--config", str(conf), str(DOMAINS / "ok-static-seed.xml")])
    assert rc == 1
    assert "Security driver model 'selinux' is not available" in capsys.readouterr().err


def test_require_confined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "strict.conf"
    conf.write_text('security_driver = ["selinux"]\nsecurity_require_confined = true\n')
    rc = main(["validate", "--config", str(conf), str(DOMAINS / "ok-none.xml")])
    assert rc == 1
    assert "Unconfined guests are not allowed on this host" in capsys.readouterr().err
    conf.write_text('security_driver = ["none"]\nsecurity_require_confined = true\n')
    rc = main(["validate", "--config", str(conf), str(DOMAINS / "ok-modelless.xml")])
    assert 'Security driver "none" cannot create confined guests' in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_common_options_before_and_after(capsys: pytest.CaptureFixture[str]) -> None:
    f = str(DOMAINS / "ok-none.xml")
    assert main(["--config", str(CONF), "--json", "validate", f]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "unconfined"
    assert main(["validate", f, "--config", str(CONF), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "unconfined"


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(CONF), str(tmp_path / "nope.xml")]) == 1
    assert "nope.xml: cannot read domain XML: No such file or directory" in capsys.readouterr().err
    assert main(["validate", "--config", str(CONF), str(tmp_path)]) == 1
    assert "Is a directory" in capsys.readouterr().err


def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("user = 3\n")
    assert main(["validate", "--config", str(conf), str(DOMAINS / "ok-none.xml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {conf}: key 'user' must be a string, not int"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("svirt ")


def test_unknown_encoding_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "enc.xml"
    f.write_text('<?xml version="1.0" encoding="bogus"?><domain/>')
    assert main(["validate", "--config", str(CONF), str(f)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {f}: XML error: malformed XML: unknown encoding: bogus"
    )


def test_overlong_name_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "long.xml"
    f.write_text(f"<domain type='kvm'><name>{'a' * 240}</name></domain>")
    assert main(["validate", "--config", str(CONF), str(f)]) == 1
    assert "domain name is longer than 200 bytes" in capsys.readouterr().err


def test_ls_z_on_files_without_xattrs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "-Z", "/proc/self/status"]) == 0
    assert capsys.readouterr().out.startswith("(no label) ")


def test_command_table_matches_the_modules() -> None:
    """Each command is found in the module the lazy table names, and help lists them all."""
    import argparse

    from svirt.cli.main import COMMANDS, build_parser

    def commands(parser: argparse.ArgumentParser) -> set[str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert commands(build_parser()) == set(COMMANDS)
    for cmd in COMMANDS:
        assert cmd in commands(build_parser(["--config", "x.conf", cmd]))


def test_validate_preflight_flags_the_seed_static_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 000: static label, relabel='no', image still virt_image_t: validate
    --preflight predicts the denial and proposes relabel='yes' (changes nothing)."""
    import os

    img = tmp_path / "ol810.qcow2"
    img.write_bytes(b"x")
    os.setxattr(img, "security.selinux", b"system_u:object_r:virt_image_t:s0\0")
    xml = tmp_path / "ol810.xml"
    xml.write_text(
        "<domain type='kvm'><name>ol810</name><seclabel type='static' model='selinux' "
        "relabel='no'><label>system_u:system_r:svirt_t:s0:c392,c662</label></seclabel>"
        f"<devices><disk type='file'><source file='{img}'/><target dev='vda'/></disk>"
        "</devices></domain>"
    )
    conf = tmp_path / "c.conf"
    conf.write_text(f'security_driver = ["selinux"]\nstate_dir = "{tmp_path}/state"\n')
    assert main(["validate", "--config", str(conf), "--preflight", str(xml)]) == 1
    out = capsys.readouterr().out
    assert "pre-flight: disk vda" in out and "virt_image_t is not accessible to svirt_t" in out
    assert "relabel='yes'" in out
    assert os.getxattr(img, "security.selinux") == b"system_u:object_r:virt_image_t:s0\0"


def test_validate_preflight_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(f'security_driver = ["selinux"]\nstate_dir = "{tmp_path}/state"\n')
    main(["validate", "--config", str(conf), "--preflight", str(DOMAINS / "ok-none.xml")])
    capsys.readouterr()
    assert not (tmp_path / "state").exists()
