"""The public API's contract (issue 14): one exception hierarchy for bad input and
failures, the audit and policy entry points, every exported name importable, and
``import svirt`` kept light. Real files, the real policy, seed 000's audit log."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sqlite3
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
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


# -- the typed surface: every type a caller meets is public --------------------------------

_PUBLIC_MODULES = (svirt, svirt.audit, svirt.policy)
# Types from outside svirt a signature may name (the standard library).
_FOREIGN = ("builtins", "collections.abc", "typing", "os", "pathlib", "datetime", "types")


def _public_names() -> tuple[dict[str, object], dict[int, str]]:
    """The public modules' namespace (what an annotation may name) and, by identity,
    the public name of each exported object."""
    namespace: dict[str, object] = {}
    where: dict[int, str] = {}
    for module in _PUBLIC_MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            namespace.setdefault(name, value)
            where.setdefault(id(value), f"{module.__name__}.{name}")
    return namespace, where


def _entry_points() -> list[tuple[str, Callable[..., object]]]:
    """(qualified name, function) of every public method, property and function."""
    found: list[tuple[str, Callable[..., object]]] = []
    for cls in (svirt.Host, svirt.Domain):
        for name, value in vars(cls).items():
            if name.startswith("_") and name != "__init__":
                continue
            fn = value.fget if isinstance(value, property) else value
            if callable(fn):
                found.append((f"svirt.{cls.__name__}.{name}", inspect.unwrap(fn)))
    for module in _PUBLIC_MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value):
                found.append((f"{module.__name__}.{name}", inspect.unwrap(value)))
    return found


def _classes(annotation: object) -> Iterator[type]:
    """The classes an annotation names (through unions, generics, Callable...)."""
    args = typing.get_args(annotation)
    if args:
        for arg in args:
            yield from _classes(arg)
        origin = typing.get_origin(annotation)
        if isinstance(origin, type) and origin.__module__.startswith("svirt"):
            yield origin
    elif isinstance(annotation, type):
        yield annotation


def private_types() -> list[str]:
    """``where: type`` for each svirt type a public signature names, or a public result
    holds in a field or property, that is not exported by a public module."""
    namespace, public = _public_names()
    problems: list[str] = []
    seen: set[int] = set()
    todo: list[tuple[str, object]] = []

    def hints(where: str, obj: Callable[..., object] | type) -> dict[str, object]:
        try:
            return typing.get_type_hints(obj, localns=namespace)
        except NameError as exc:  # a TYPE_CHECKING import no public module exports
            problems.append(f"{where}: {exc.name} (not in any public __all__)")
            return {}

    for where, fn in _entry_points():
        for arg, annotation in hints(where, fn).items():
            todo.append((f"{where} ({arg})", annotation))
    while todo:
        where, annotation = todo.pop()
        for cls in _classes(annotation):
            if cls.__module__ in _FOREIGN:
                continue
            if id(cls) not in public:
                problems.append(f"{where}: {cls.__module__}.{cls.__qualname__}")
                continue
            if id(cls) in seen:
                continue
            seen.add(id(cls))
            # what the result carries: its fields and its public properties
            if dataclasses.is_dataclass(cls):
                for field, t in hints(cls.__qualname__, cls).items():
                    todo.append((f"{public[id(cls)]}.{field}", t))
            for name, member in vars(cls).items():
                if isinstance(member, property) and member.fget and not name.startswith("_"):
                    returned = hints(f"{cls.__qualname__}.{name}", member.fget).get("return")
                    if returned is not None:
                        todo.append((f"{public[id(cls)]}.{name}", returned))
    return sorted(problems)


def test_every_type_of_the_public_api_is_public() -> None:
    """A typed caller never imports a private module: each type that a method of Host or
    Domain, or a public function, takes or returns, and each type those results hold,
    is exported by svirt, svirt.audit or svirt.policy."""
    found = private_types()
    assert not found, "types of the public API that no public module exports:\n" + "\n".join(found)
    names = {name for name, _ in _entry_points()}
    # the check looked at the merged API's methods, and at what their results hold
    assert {"svirt.Host.start", "svirt.Host.restore", "svirt.Domain.block_devices"} <= names
    assert {"svirt.Host.verify_page", "svirt.Host.sharers", "svirt.Host.plan"} <= names


@dataclasses.dataclass
class _Hidden:
    """A type no public module exports."""


@dataclasses.dataclass
class _Carrier:
    """A public result (the test exports it) holding the hidden type in a field."""

    inner: _Hidden


def _leaky(self: svirt.Host) -> _Hidden:
    raise NotImplementedError


def _unnamed(self: svirt.Host) -> NotExported:  # type: ignore[name-defined]  # noqa: F821
    raise NotImplementedError


def _carries(self: svirt.Domain) -> list[_Carrier]:
    raise NotImplementedError


def test_the_check_names_the_method_and_the_private_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: a method returning a private type, one naming a type only a
    TYPE_CHECKING import names, and a public result whose field holds a private type."""
    monkeypatch.setattr(svirt.Host, "leaky", _leaky, raising=False)
    monkeypatch.setattr(svirt.Host, "unnamed", _unnamed, raising=False)
    monkeypatch.setattr(svirt.Domain, "carries", _carries, raising=False)
    monkeypatch.setattr(svirt, "Carrier", _Carrier, raising=False)
    monkeypatch.setattr(svirt, "__all__", [*svirt.__all__, "Carrier"])
    assert private_types() == [
        f"svirt.Carrier.inner: {__name__}._Hidden",
        f"svirt.Host.leaky (return): {__name__}._Hidden",
        "svirt.Host.unnamed: NotExported (not in any public __all__)",
    ]


def test_lazy_exports_are_exported() -> None:
    """Each lazily imported name is in ``__all__`` and resolves in a fresh interpreter
    to the object its module defines."""
    code = (
        "import svirt, svirt.audit, svirt.policy\n"
        "for m in (svirt, svirt.audit, svirt.policy):\n"
        "    for n in m.__all__:\n"
        "        v = getattr(m, n)\n"
        "        assert v is not None, (m.__name__, n)\n"
        "print(svirt.FindingKind.__module__, svirt.FindingKind.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert out.split() == ["svirt.doctor", "Kind"]
    assert set(svirt._LAZY) <= set(svirt.__all__)
    assert set(svirt.audit._EXPORTS) <= set(svirt.audit.__all__)
    assert set(svirt.policy._LAZY) <= set(svirt.policy.__all__)


def _reference(cls: type) -> str:
    """The part of docs/api.md's reference about ``svirt.<cls>``."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    start = doc.index(f"### `svirt.{cls.__name__}(")
    return doc[start : doc.index("\n### ", start + 1)]


def test_the_reference_documents_every_method_and_only_those() -> None:
    """docs/api.md's reference names each public method and property of Host and Domain
    (the merged API's blocks included), and names nothing that is not one."""
    for cls, attributes in ((svirt.Host, set()), (svirt.Domain, {"name", "host", "started"})):
        section = _reference(cls)
        members = {n for n in vars(cls) if not n.startswith("_")} | attributes
        missing = sorted(n for n in members if f"`{n}(" not in section and f"`{n}`" not in section)
        assert not missing, f"docs/api.md's reference of svirt.{cls.__name__} lacks {missing}"
        rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
        named = {name for row in rows for name in re.findall(r"`(\w+)", row)}
        assert named <= members, f"documented but not on svirt.{cls.__name__}: {named - members}"


def test_every_entry_point_is_behind_the_error_boundary() -> None:
    """Each public method, property and function of svirt.api goes through ``_public``
    (an OSError or a database error from below arrives as a SvirtError)."""
    bare = [
        name
        for name, _fn in _entry_points()
        if name.startswith(("svirt.Host.", "svirt.Domain.", "svirt.file_labels", "svirt.boot_time"))
        and name != "svirt.Domain.__init__"  # stores its arguments: nothing to turn
        and not _wrapped(name)
    ]
    assert not bare, f"not wrapped by svirt.api._public: {bare}"


def _wrapped(qualified: str) -> bool:
    obj: object = svirt
    for part in qualified.split(".")[1:]:
        obj = inspect.getattr_static(obj, part)
    fn = obj.fget if isinstance(obj, property) else obj
    return hasattr(fn, "__wrapped__")
