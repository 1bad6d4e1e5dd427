"""The public API's contract (issue 14): one exception hierarchy for bad input and
failures, the audit and policy entry points, every exported name importable, and
``import svirt`` kept light. Real files, the real policy, seed 000's audit log."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import svirt
import svirt.audit
import svirt.policy
from svirt.api import _public

LOG = Path(__file__).parent / "data" / "audit" / "seed_000_raw.log"
VM = "system_u:system_r:svirt_t:s0:c1,c2"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "svirt.conf"
    path.write_text(
        'security_driver = ["selinux"]\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'libvirt_run_dir = "{tmp_path / "libvirt-run"}"\n'
    )
    return path


def raised(call: Callable[[], object]) -> svirt.SvirtError:
    with pytest.raises(svirt.SvirtError) as info:
        call()
    assert not isinstance(info.value, sqlite3.Error)
    return info.value


def test_bad_input_and_failures_are_svirt_errors(conf: Path, tmp_path: Path) -> None:
    host = svirt.Host(conf)
    missing = tmp_path / "nope"

    exc = raised(lambda: svirt.Host(missing))
    assert isinstance(exc, svirt.ConfigError) and exc.source == str(missing)

    exc = raised(lambda: host.definition("<domain type='kvm'><name>x</name>"))
    assert isinstance(exc, svirt.XMLError) and str(exc).startswith("XML error: malformed XML")

    exc = raised(lambda: host.definition(missing))
    assert isinstance(exc, svirt.XMLError)
    assert str(exc) == f"{missing}: cannot read domain XML: No such file or directory"

    exc = raised(lambda: host.domain("nosuch"))
    assert isinstance(exc, svirt.LaunchError) and str(exc) == "failed to get domain 'nosuch'"

    exc = raised(lambda: svirt.Domain(host, "nosuch").stop())
    assert str(exc) == "Requested operation is not valid: domain 'nosuch' is not running"

    exc = raised(lambda: svirt.policy.check(VM, VM, "file", "read", policy=missing))
    assert isinstance(exc, svirt.PolicyError) and str(missing) in str(exc)
    exc = raised(lambda: host.verify(policy=missing))
    assert isinstance(exc, svirt.PolicyError)

    exc = raised(lambda: list(svirt.audit.search(missing)))
    assert isinstance(exc, svirt.AuditError) and exc.source == str(missing)
    exc = raised(lambda: svirt.audit.criteria(colour="red"))
    assert str(exc) == "unknown search criterion 'colour'"

    exc = raised(lambda: svirt.file_labels(missing))
    assert str(exc) == f"{missing}: cannot access: No such file or directory"

    # a state directory that is a file, and a state database that is not one
    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("x")
    cfg = svirt.config_from_mapping({"security_driver": ["selinux"], "state_dir": str(not_a_dir)})
    assert isinstance(raised(svirt.Host(cfg).domains), svirt.StateError)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "svirt.db").write_bytes(b"not a database " * 100)
    cfg = svirt.config_from_mapping({"security_driver": ["selinux"], "state_dir": str(garbage)})
    assert isinstance(raised(svirt.Host(cfg).listing), svirt.StateError)


def test_the_boundary_turns_os_and_database_errors_into_svirt_errors(tmp_path: Path) -> None:
    """What the layers below let escape (none known today) still arrives as a SvirtError."""
    missing = tmp_path / "missing"
    exc = raised(_public(lambda: missing.read_bytes()))
    assert exc.source == str(missing) and exc.message == "No such file or directory"
    assert isinstance(exc.__cause__, FileNotFoundError)

    db = tmp_path / "x.db"
    db.write_bytes(b"garbage " * 512)
    exc = raised(_public(lambda: sqlite3.connect(db).execute("SELECT 1 FROM t").fetchall()))
    assert isinstance(exc, svirt.StateError) and "not a database" in str(exc)


def test_audit_search_takes_ausearch_spellings() -> None:
    serials = [e.serial for e in svirt.audit.search(LOG, types="AVC")]
    assert serials == [15655]
    # the same search spelled as criteria, as names, with a whole-word comm
    crit = svirt.audit.SearchCriteria(types=svirt.audit.parse_message_types("AVC"))
    assert [e.serial for e in svirt.audit.search([LOG], crit)] == serials
    assert [e.serial for e in svirt.audit.search(LOG, types=["AVC"], comm="qemu-kvm")] == serials
    assert list(svirt.audit.search(LOG, types="AVC", comm="qemu", whole_word=True)) == []
    # seed 000 was logged on 2025-12-05: nothing is "recent"; everything is before today
    assert list(svirt.audit.search(LOG, start="recent")) == []
    assert len(list(svirt.audit.search(LOG, end="today"))) == len(list(svirt.audit.search(LOG)))
    c = svirt.audit.criteria(uid="root", loginuid=0, success="no", exit="EACCES")
    assert (c.uid_name, c.loginuid, c.success, c.exit) == ("root", 0, False, 13)
    with pytest.raises(svirt.AuditError, match="unknown message type 'NOPE'"):
        svirt.audit.criteria(types="NOPE")


def test_audit_search_and_explain_are_the_functions_whatever_was_imported() -> None:
    # The submodules of the same names (loaded by the CLI and the engines) do not
    # replace the package's functions; their own names stay reachable.
    import svirt.audit.explain
    import svirt.audit.search
    from svirt.audit.search import SearchCriteria

    assert callable(svirt.audit.search) and svirt.audit.search.__module__ == "svirt.audit.facade"
    assert svirt.audit.explain.__module__ == "svirt.audit.facade"
    assert SearchCriteria is svirt.audit.SearchCriteria


def test_audit_explain_from_the_contexts(conf: Path) -> None:
    [x] = svirt.audit.explain(LOG, policy=False, config=conf)
    assert x.denial.scontext == "system_u:system_r:svirt_t:s0:c392,c662"
    assert x.denial.perms == ("write",) and x.basis == "contexts"
    assert x.fixes, "an explanation carries its fix"
    # policy=True asks svirt.conf's policy_path first (here one that does not exist)
    missing = conf.parent / "no-policy"
    conf.write_text(conf.read_text() + f'policy_path = "{missing}"\n')
    with pytest.raises(svirt.PolicyError, match="no-policy"):
        svirt.audit.explain(LOG, config=conf)


def test_policy_check_allows_a_vm_its_own_image() -> None:
    d = svirt.policy.check(VM, "system_u:object_r:svirt_image_t:s0:c1,c2", "file", ["read"])
    assert d.allowed and d.reason is svirt.policy.Reason.ALLOW
    with pytest.raises(svirt.PolicyError, match="unknown object class 'nosuchclass'"):
        svirt.policy.check(VM, VM, "nosuchclass", "read")


def test_every_exported_name_resolves() -> None:
    for module in (svirt, svirt.audit, svirt.policy):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    major, minor = svirt.API_VERSION.split(".")
    assert major.isdigit() and minor.isdigit()


def test_import_svirt_stays_light() -> None:
    """``import svirt`` (every CLI run does it) loads no QEMU, doctor, verify or audit code."""
    code = (
        "import sys, svirt; "
        "print(sorted(m for m in sys.modules if m.startswith(('svirt.launch', 'svirt.doctor', "
        "'svirt.policy', 'svirt.audit', 'svirt.security'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert out.strip() == "[]"
