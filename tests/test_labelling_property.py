"""Property: label/restore of several domains over overlapping files leaves nothing behind.

Hypothesis draws a few domains, each using some of four shared files in one of the ways
a domain can (private r/w disk, r/w disk with an explicit per-disk label two domains can
agree on, read-only disk, shareable disk, kernel), and a sequence of ``svirt label`` /
``svirt restore`` of those domains, some labels with a fault injected after step k.
Everything is real: files, ``security.selinux``, ``trusted.*``, chown, the state database.

What must hold (libvirt-security-spec §5–§7, issue 3):

- a label that fails (in use by another domain with another label, or a fault at any
  step) leaves every file exactly as it was, xattrs and owner included;
- once every domain is restored, no ``trusted.libvirt.security.*`` xattr is left;
- a file only ever used in remembered ways (r/w, kernel) has its original label and owner
  back. A file that some domain used read-only or shareable may keep the shared
  label libvirt gives such media (``virt_content_t:s0`` / ``svirt_image_t:s0``, never
  restored by design, §6.2) and the QEMU owner, but never a domain's category pair.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from svirt.conf import config_from_mapping
from svirt.context import SecurityContext
from svirt.domain import Domain, parse_domain
from svirt.errors import OperationInvalid
from svirt.host import selinux as host_selinux
from svirt.host.ids import resolve_uid
from svirt.security.manager import SecurityManager

ORIGINALS = [
    ("system_u:object_r:user_tmp_t:s0", 0, 0),
    ("system_u:object_r:virt_image_t:s0", 1234, 1234),
    ("unconfined_u:object_r:user_home_t:s0", 0, 5),
    ("system_u:object_r:public_content_t:s0", 4321, 0),
]
AGREED = "system_u:object_r:svirt_image_t:s0:c500,c501"
ROLES = ("rw", "agreed", "ro", "shared", "kernel")
SHARED_ROLES = ("ro", "shared")
REMEMBERED_ROLES = ("rw", "agreed", "kernel")


class Injected(Exception):
    """The fault a step hook raises."""


def domain_xml(name: str, uses: dict[int, str], files: list[Path]) -> Domain:
    disks, kernel = [], ""
    for i, role in sorted(uses.items()):
        path = files[i]
        if role == "kernel":
            kernel = f"<kernel>{path}</kernel>"
            continue
        source_extra = (
            f"<seclabel model='selinux' relabel='yes'><label>{AGREED}</label></seclabel>"
            if role == "agreed"
            else ""
        )
        flags = {"ro": "<readonly/>", "shared": "<shareable/>"}.get(role, "")
        disks.append(
            f"<disk type='file' device='disk'><source file='{path}'>{source_extra}</source>"
            f"<target dev='vd{chr(ord('a') + i)}'/>{flags}</disk>"
        )
    return parse_domain(
        f"<domain type='kvm'><name>{name}</name><os><type>hvm</type>{kernel}</os>"
        f"<seclabel type='dynamic' model='selinux'/><devices>{''.join(disks)}</devices></domain>"
    )


def file_state(path: Path) -> tuple[int, int, dict[str, bytes]]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, {n: os.getxattr(path, n) for n in sorted(os.listxattr(path))}


@st.composite
def domain_uses(draw: st.DrawFn) -> dict[int, str]:
    """Which of the four files a domain uses, and how (at most one kernel)."""
    uses = draw(st.dictionaries(st.integers(0, 3), st.sampled_from(ROLES), max_size=4))
    kernels = [i for i, r in uses.items() if r == "kernel"]
    for i in kernels[1:]:
        uses[i] = "rw"
    return uses


actions = st.lists(
    st.tuples(
        st.sampled_from(["label", "restore", "label-fault"]),
        st.integers(0, 2),  # which domain
        st.integers(0, 5),  # the step a fault is injected after
    ),
    max_size=12,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    uses=st.lists(domain_uses(), min_size=3, max_size=3),
    steps=actions,
    dac=st.booleans(),
)
def test_label_restore_sequences_leave_nothing_behind(
    tmp_path: Path, uses: list[dict[int, str]], steps: list[tuple[str, int, int]], dac: bool
) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    files = []
    for i, (label, uid, gid) in enumerate(ORIGINALS):
        f = work / f"f{i}.img"
        f.write_bytes(b"image\n")
        os.chmod(f, 0o600)  # QEMU cannot use it as it is: DAC must act
        os.chown(f, uid, gid)
        host_selinux.setfilecon(f, label)
        files.append(f)
    cfg = config_from_mapping(
        {
            "security_driver": ["selinux"],
            "state_dir": str(work / "state"),
            "libvirt_run_dir": str(work / "libvirt-run"),
            "dynamic_ownership": dac,
            "vm_identity": "off",
        }
    )
    mgr = SecurityManager(cfg)
    domains = [domain_xml(f"vm{d}", uses[d], files) for d in range(3)]
    labelled: set[int] = set()
    shared_use: set[int] = set()  # files some successful label used read-only/shareable

    def check_refcounts() -> None:
        # Every labelled domain that uses a file in a remembered way holds one reference.
        for i, f in enumerate(files):
            users = sum(1 for d in labelled if uses[d].get(i) in REMEMBERED_ROLES)
            drivers = ("selinux", "dac") if dac else ("selinux",)
            for drv in drivers:
                try:
                    ref = os.getxattr(f, f"trusted.libvirt.security.ref_{drv}").decode()
                except OSError:
                    ref = "0"
                assert ref == str(users), f"{f.name}: ref_{drv}={ref}, {users} users"

    for action, d, k in steps:
        check_refcounts()
        if action == "restore":
            if d in labelled:
                mgr.restore_domain(f"vm{d}")
                labelled.discard(d)
            continue
        if d in labelled:
            continue
        before = [file_state(f) for f in files]
        hook: Any = None
        if action == "label-fault":

            def hook(i: int, k: int = k) -> None:
                if i == k:
                    raise Injected(f"fault after step {k}")

        try:
            mgr.label_domain(domains[d], step_hook=hook)
        except (OperationInvalid, Injected) as exc:
            if isinstance(exc, OperationInvalid):
                assert "which is already in use" in str(exc)
            event(f"label refused: {type(exc).__name__}")
            assert [file_state(f) for f in files] == before, f"{action} vm{d} left traces"
            assert mgr.store.read(f"vm{d}") is None
            continue
        event("label succeeded")
        labelled.add(d)
        shared_use.update(i for i, r in uses[d].items() if r in SHARED_ROLES)

    check_refcounts()
    for d in sorted(labelled):
        mgr.restore_domain(f"vm{d}")
        labelled.discard(d)
        check_refcounts()

    qemu_uid = resolve_uid(cfg.user)
    for i, f in enumerate(files):
        uid, gid, xattrs = file_state(f)
        leftovers = [n for n in xattrs if n.startswith("trusted.libvirt.security.")]
        assert leftovers == [], f"{f.name}: {leftovers}"
        label = host_selinux.getfilecon(f)
        assert label is not None
        orig_label, orig_uid, orig_gid = ORIGINALS[i]
        if i not in shared_use:
            assert label == orig_label, f.name
            assert (uid, gid) == (orig_uid, orig_gid), f.name
        else:
            rng = SecurityContext.parse(label).range
            assert rng is not None and not rng.high.categories, f"{f.name} kept {label}"
            assert uid in (orig_uid, qemu_uid), f.name
    drv = mgr.selinux
    assert drv is not None
    assert [r for r in drv.ledger.reservations() if r.kind == "dynamic"] == []
    assert list(mgr.store.records()) == []


@pytest.mark.parametrize("dac", [False, True], ids=["selinux", "selinux+dac"])
def test_example_ro_before_rw_keeps_the_content_label(tmp_path: Path, dac: bool) -> None:
    """The documented exception, pinned down: a read-only user first, then a r/w user,
    remembers the content label as 'original' (libvirt does the same)."""
    label, uid, gid = ORIGINALS[1]
    f = tmp_path / "f.img"
    f.write_bytes(b"x")
    os.chmod(f, 0o600)
    os.chown(f, uid, gid)
    host_selinux.setfilecon(f, label)
    mgr = SecurityManager(
        config_from_mapping(
            {
                "security_driver": ["selinux"],
                "state_dir": str(tmp_path / "s"),
                "libvirt_run_dir": str(tmp_path / "libvirt-run"),
                "dynamic_ownership": dac,
                "vm_identity": "off",
            }
        )
    )
    mgr.label_domain(domain_xml("ro", {0: "ro"}, [f]))
    mgr.label_domain(domain_xml("rw", {0: "rw"}, [f]))
    mgr.restore_domain("rw")
    mgr.restore_domain("ro")
    assert host_selinux.getfilecon(f) == "system_u:object_r:virt_content_t:s0"
    assert [n for n in os.listxattr(f) if n.startswith("trusted.libvirt.")] == []
