"""``svirt restore NAME`` from svirt's record (issue 14, part "restore"), on real files.

What is restored is what was labelled (the domain's row in the state database), never
what a domain XML file says now: the file may have been deleted or edited since.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

import svirt
from svirt.host import selinux as host_selinux
from test_cli_label import ORIG, Env, one_error_line, whole_state

OTHER = "system_u:object_r:user_home_t:s0"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_restore_by_name_after_the_xml_was_deleted(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    img = env.file("a.img")
    before = whole_state(img)
    xml = env.domain("vm1", [(img, "")])
    assert env.run(capsys, "label", str(xml))[0] == 0
    xml.unlink()
    assert host_selinux.getfilecon(img) != ORIG
    rc, out, err = env.run(capsys, "restore", "vm1")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "domain vm1: 2 restored to the remembered original; MCS level released"
    assert "selinux label restored to system_u:object_r:user_tmp_t:s0" in lines[2]
    assert "dac     owner restored to +0:+0 (the remembered original)" in lines[3]
    assert whole_state(img) == before
    assert env.reservations() == []
    assert not (env.state / "domains" / "vm1.xml").exists()


def test_an_edited_xml_restores_what_was_labelled_and_says_so(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    img, other = env.file("a.img"), env.file("b.img", OTHER)
    before_img, before_other = whole_state(img), whole_state(other)
    xml = env.domain("vm1", [(img, "")])
    assert env.run(capsys, "label", str(xml))[0] == 0
    env.domain("vm1", [(other, "")])  # the file now names another disk
    rc, out, err = env.run(capsys, "restore", "--json", str(xml))
    assert rc == 0, err
    assert whole_state(img) == before_img  # what was labelled is restored
    assert whole_state(other) == before_other  # what the XML says now is left alone
    report = json.loads(out)
    assert report["from_record"] is True
    assert report["restored"] == [str(img)]  # label and owner, one path
    assert report["differences"] == [f"only in the XML: {other}", f"only in the record: {img}"]
    assert err.strip().splitlines()[-1] == (
        f"note: {xml} differs from what svirt labelled (only in the XML: {other}; only in "
        f"the record: {img}); restored what was labelled, from svirt's record"
    )


def test_an_unedited_xml_says_nothing_more(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    xml = env.domain("vm1", [(env.file("a.img"), "")])
    assert env.run(capsys, "label", str(xml))[0] == 0
    rc, _, err = env.run(capsys, "restore", str(xml))
    assert rc == 0
    assert "note:" not in err


def test_a_name_that_is_neither_a_record_nor_a_file(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    img = env.file("a.img")
    assert env.run(capsys, "label", str(env.domain("vm1", [(img, "")])))[0] == 0
    before = whole_state(img)
    for arg in ("nosuch", str(env.dir / "deleted.xml")):
        rc, out, err = env.run(capsys, "restore", arg)
        assert rc == 1 and out == ""
        assert one_error_line(err) == f"error: failed to get domain '{arg}'"
    assert whole_state(img) == before
    assert [d for _, d in env.reservations()] == ["vm1"]


def test_a_running_domain_is_refused_by_name(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # A record the transition table never lets `restore` take (a domain being started).
    img = env.file("a.img")
    assert env.run(capsys, "label", str(env.domain("vm1", [(img, "")])))[0] == 0

    conn = sqlite3.connect(env.state / "svirt.db")
    with conn:
        conn.execute("UPDATE domains SET state='running', owner=? WHERE name='vm1'", (os.getpid(),))
    conn.close()
    before = whole_state(img)
    rc, _, err = env.run(capsys, "restore", "vm1")
    assert rc == 1
    assert one_error_line(err) == (
        "error: Requested operation is not valid: domain 'vm1' is running; use 'svirt stop' "
        "for a running domain"
    )
    assert whole_state(img) == before


def test_the_api_restores_by_name(env: Env) -> None:
    img = env.file("a.img")
    before = whole_state(img)
    host = svirt.Host(env.conf)
    host.label(env.domain("vm1", [(img, "")]))
    report = host.restore("vm1")
    assert (report.name, report.from_record, report.errors) == ("vm1", True, ())
    assert report.restored == [str(img)]
    assert whole_state(img) == before
    with pytest.raises(svirt.SecurityError, match=r"^failed to get domain 'vm1'$"):
        host.restore("vm1")
