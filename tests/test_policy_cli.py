"""``svirt policy check SCON TCON CLASS PERM...`` against the installed reference policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svirt.cli.main import main

pytestmark = pytest.mark.policy

POLICY = "/etc/selinux/default/policy/policy.33"
VM = "system_u:system_r:svirt_t:s0:c1,c2"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["policy", "check", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("backend", ["audit2why", "libsepol"])
def test_constraint_denial_explains_the_mcs_constraint(
    capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    rc, out, err = run(
        capsys,
        "--backend",
        backend,
        VM,
        "system_u:object_r:svirt_image_t:s0:c3,c4",
        "file",
        "read",
        "write",
    )
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"denied (constraint): {VM} -> system_u:object_r:svirt_image_t:s0:c3,c4 "
        "file { read write }"
    )
    assert lines[1].startswith("constraint: mlsconstrain file {")
    assert "(h1 dom h2 -Fail-)" in lines[1]
    assert "audit2allow cannot fix this" in lines[2]
    assert lines[-1] == f"policy: {POLICY} ({backend})"


def test_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, VM, "system_u:object_r:svirt_image_t:s0:c1,c2", "file", "write")
    assert rc == 0
    assert out.startswith("allowed: ")


def test_boolean_denial_names_setsebool(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, VM, "system_u:object_r:nfs_t:s0", "file", "read")
    assert rc == 0
    assert out.startswith("denied (boolean): ")
    assert "allowed if: setsebool -P virt_use_nfs on" in out.splitlines()


def test_te_denial(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, VM, "system_u:object_r:virt_image_t:s0", "file", "write")
    assert rc == 0
    assert out.startswith("denied (no allow rule): ")


def test_allowed_through_a_boolean_that_is_on(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(
        capsys,
        "system_u:system_r:postfix_local_t:s0",
        "system_u:object_r:mail_spool_t:s0",
        "file",
        "write",
    )
    assert rc == 0
    assert "granted through: boolean postfix_local_write_mail_spool is on" in out


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--json", VM, "system_u:object_r:nfs_t:s0", "file", "read")
    assert rc == 0
    data = json.loads(out)
    assert data["allowed"] is False
    assert data["reason"] == "boolean"
    assert {"name": "virt_use_nfs", "value": True} in data["booleans"]
    assert data["perms"] == ["read"]
    assert data["policy"] == POLICY


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["garbage", VM, "file", "read"], "invalid source context 'garbage'"),
        ([VM, "nope", "file", "read"], "invalid target context 'nope'"),
        ([VM, VM, "no_class", "read"], "unknown object class 'no_class'"),
        ([VM, VM, "file", "read", "fly"], "unknown permission in { read fly } for class 'file'"),
    ],
)
def test_bad_input_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc, out, err = run(capsys, *argv)
    assert rc == 1
    assert out == ""
    assert err.splitlines() == [f"error: {message} for policy {POLICY}"]


def test_policy_option_and_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "policy.99"
    rc, _, err = run(capsys, "--policy", str(missing), VM, VM, "file", "read")
    assert rc == 1
    assert err.splitlines() == [
        f"error: cannot read binary policy {missing}: No such file or directory"
    ]
    conf = tmp_path / "svirt.conf"
    conf.write_text(f'policy_path = "{missing}"\n')
    rc, _, err = run(capsys, "--config", str(conf), VM, VM, "file", "read")
    assert rc == 1 and str(missing) in err


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["policy", "check", VM, VM, "file"])
    assert info.value.code == 2
    capsys.readouterr()
