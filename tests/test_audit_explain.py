"""``svirt audit explain`` on real logs, with the real policy, real live XML and real xattrs.

The seed's denial (``tests/data/audit``, see its README) is explained as the seed explains
it: SELinux caused it, type enforcement (``virt_image_t`` is not accessible to
``svirt_t``), the levels, the VM, and the fix (label the image, not a policy module).
Other kinds (MCS, boolean, permissive, dontaudit, a context the policy does not know)
are written here as the kernel writes them, and checked against the installed reference
policy (``/etc/selinux/default/policy/policy.33``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import timezone
from svirt.audit.events import Event
from svirt.audit.explain import (
    XATTR_REF,
    XATTR_REMEMBERED,
    XATTR_TIMESTAMP,
    Cause,
    collect_denials,
    explain,
    read_remembered,
)
from svirt.audit.owners import load_live_domains
from svirt.audit.reader import LogInput, ReadStats
from svirt.audit.search import SearchCriteria, parse_message_types, scan_exact
from svirt.cli.main import main
from svirt.host.selinux import setfilecon
from svirt.policy.oracle import PolicyOracle, default_policy_path
from test_audit_reader import load_generator

DATA = Path(__file__).parent / "data" / "audit"
POLICY = Path("/etc/selinux/default/policy/policy.33")
needs_policy = pytest.mark.skipif(not POLICY.exists(), reason="reference policy not installed")

VM_A = "system_u:system_r:svirt_t:s0:c1,c2"
IMG_B = "system_u:object_r:svirt_image_t:s0:c3,c4"


@pytest.fixture(scope="module")
def oracle() -> PolicyOracle:
    if not POLICY.exists():
        pytest.skip("reference policy not installed")
    return PolicyOracle(POLICY)


@pytest.fixture
def pacific() -> Iterator[None]:
    with timezone("America/Los_Angeles"):
        yield


def events_of(path: Path) -> list[Event]:
    crit = SearchCriteria(types=parse_message_types("AVC,USER_AVC"))
    return list(scan_exact([LogInput(str(path))], crit, ReadStats()))


def live_xml(name: str, label: str, disk: Path, *, pid: int, relabel: str = "yes") -> str:
    image = label.replace(":system_r:svirt_t:", ":object_r:svirt_image_t:")
    imagelabel = f"<imagelabel>{image}</imagelabel>" if relabel == "yes" else ""
    return f"""<domstatus state='running' pid='{pid}'>
  <domain type='kvm' id='3'>
    <name>{name}</name>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='{disk}'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
    <seclabel type='dynamic' model='selinux' relabel='{relabel}'>
      <label>{label}</label>{imagelabel}
    </seclabel>
  </domain>
</domstatus>
"""


def avc_line(
    serial: int,
    perms: str,
    scon: str,
    tcon: str,
    *,
    name: str = "disk.qcow2",
    tclass: str = "file",
    permissive: int = 0,
    pid: int = 4242,
    ino: int = 99,
) -> str:
    return (
        f"type=AVC msg=audit(1764924600.000:{serial}): avc:  denied  {{ {perms} }} for  "
        f'pid={pid} comm="qemu-kvm" name="{name}" dev="dm-0" ino={ino} scontext={scon} '
        f"tcontext={tcon} tclass={tclass} permissive={permissive}"
    )


def syscall_line(
    serial: int, scon: str, *, pid: int = 4242, ok: bool = False, items: int = 0
) -> str:
    return (
        f"type=SYSCALL msg=audit(1764924600.000:{serial}): arch=c000003e syscall=257 "
        f"success={'yes' if ok else 'no'} exit={3 if ok else -13} a0=ffffff9c a1=7ff a2=2 a3=0 "
        f"items={items} ppid=1 pid={pid} auid=4294967295 uid=107 gid=107 euid=107 suid=107 "
        f'fsuid=107 egid=107 sgid=107 fsgid=107 tty=(none) ses=4294967295 comm="qemu-kvm" '
        f'exe="/usr/bin/qemu-system-x86_64" subj={scon} key=(null)'
    )


def path_line(serial: int, path: Path, obj: str, ino: int) -> str:
    return (
        f'type=PATH msg=audit(1764924600.000:{serial}): item=0 name="{path}" inode={ino} '
        f"dev=fd:00 mode=0100644 ouid=107 ogid=107 rdev=00:00 obj={obj} nametype=NORMAL "
        "cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0"
    )


# --- the seed --------------------------------------------------------------------------------


@needs_policy
def test_seed_verbatim_denial_explained(oracle: PolicyOracle, pacific: None) -> None:
    """The seed's own lines, nothing else on the host: the seed's conclusions."""
    (x,) = explain(events_of(DATA / "seed_000_ausearch_i.txt"), oracle=oracle)
    d = x.denial
    assert (d.comm, d.perms, d.tclass, d.name, d.count) == (
        "qemu-kvm",
        ("write",),
        "file",
        "ol810.qcow2",
        1,
    )
    assert x.selinux_caused and x.mode == "enforcing"
    assert "openat() failed with EACCES (Permission denied)" in x.outcome
    assert x.cause is Cause.TYPE_ENFORCEMENT and x.policy_reason == "TERULE"
    assert x.basis == f"policy {POLICY}"
    assert "virt_image_t is not accessible to svirt_t" in x.why
    assert x.mcs is not None and x.mcs.dominates
    assert (x.mcs.source_level, x.mcs.target_level) == ("s0:c392,c662", "s0")
    assert x.vm == "ol810" and x.vm_source is not None and "-name guest=" in x.vm_source
    commands = [f.command or "" for f in x.fixes]
    assert any("relabel='yes'" in c for c in commands)
    assert any(c.startswith("chcon -t svirt_image_t -l s0:c392,c662 ") for c in commands)
    assert "label the image" in x.fixes[0].text and "not a policy module" in x.fixes[0].text
    assert x.do_not is not None and "audit2allow" in x.do_not and "every VM" in x.do_not


@needs_policy
def test_seed_golden_with_live_xml(
    tmp_path: Path, pacific: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """svirt audit explain on the seed's log, with libvirt's live XML for ol810 and the
    image present with the label the seed shows: the golden text."""
    images, run, state = tmp_path / "images", tmp_path / "run", tmp_path / "state"
    for d in (images, run, state):
        d.mkdir()
    image = images / "ol810.qcow2"
    image.write_bytes(b"QFI\xfb" + b"\0" * 4096)
    setfilecon(image, "system_u:object_r:virt_image_t:s0")
    (run / "ol810.xml").write_text(
        (DATA / "ol810_live.xml").read_text().replace("@IMAGES@", str(images))
    )
    conf = tmp_path / "svirt.conf"
    conf.write_text(f'state_dir = "{state}"\nlibvirt_run_dir = "{run}"\npolicy_path = "{POLICY}"\n')
    rc = main(["audit", "explain", "--config", str(conf), "-if", str(DATA / "seed_000_raw.log")])
    out = capsys.readouterr().out
    assert rc == 0
    golden = (
        (DATA / "seed_000_explain.txt")
        .read_text()
        .replace("@IMAGES@", str(images))
        .replace("@RUN@", str(run))
        .replace("@INODE@", str(image.stat().st_ino))
    )
    assert out == golden
    for phrase in (
        "SELinux caused it? Yes",
        "virt_image_t is not accessible to svirt_t",
        "VM ol810 (from libvirt live XML",
        "relabel='no'",
        "Do not use audit2allow",
    ):
        assert phrase in out


@needs_policy
def test_remembered_label_and_refcount_shown(tmp_path: Path, oracle: PolicyOracle) -> None:
    image = tmp_path / "b.qcow2"
    image.write_bytes(b"x")
    setfilecon(image, IMG_B)
    os.setxattr(image, XATTR_REMEMBERED, b"system_u:object_r:virt_image_t:s0")
    os.setxattr(image, XATTR_REF, b"1")
    os.setxattr(image, XATTR_TIMESTAMP, b"1795301930")
    r = read_remembered(str(image))
    assert (r.label, r.refcount, r.timestamp) == (
        "system_u:object_r:virt_image_t:s0",
        1,
        1795301930,
    )
    ino = image.stat().st_ino
    log = tmp_path / "audit.log"
    log.write_text(
        "\n".join(
            [
                avc_line(7, "read write", VM_A, IMG_B, name=image.name, ino=ino),
                syscall_line(7, VM_A, items=1),
                path_line(7, image, IMG_B, ino),
            ]
        )
        + "\n"
    )
    (x,) = explain(events_of(log), oracle=oracle)
    assert x.file is not None and x.file.path == str(image) and x.file.how == "the audit record"
    assert x.file.exists and x.file.label == IMG_B and x.file.inode_matches is True
    assert x.file.remembered == r
    bare = tmp_path / "bare"
    bare.write_bytes(b"")
    assert read_remembered(str(bare)).label is None


# --- MCS, booleans, permissive, dontaudit, unknown contexts --------------------------------


def _two_vms(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    state, run = tmp_path / "state", tmp_path / "run"
    (state / "domains").mkdir(parents=True)
    run.mkdir()
    disk_a, disk_b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    for disk in (disk_a, disk_b):
        disk.write_bytes(b"x")
    setfilecon(disk_b, IMG_B)
    (state / "domains" / "vm-a.xml").write_text(live_xml("vm-a", VM_A, disk_a, pid=4242))
    (run / "vm-b.xml").write_text(
        live_xml("vm-b", "system_u:system_r:svirt_t:s0:c3,c4", disk_b, pid=5151)
    )
    return state, run, disk_a, disk_b


@needs_policy
def test_mcs_denial_names_both_vms(tmp_path: Path, oracle: PolicyOracle) -> None:
    state, run, _disk_a, disk_b = _two_vms(tmp_path)
    log = tmp_path / "audit.log"
    log.write_text(
        avc_line(9, "read write", VM_A, IMG_B, name="b.qcow2", ino=disk_b.stat().st_ino)
        + "\n"
        + syscall_line(9, VM_A)
        + "\n"
    )
    domains = load_live_domains(state, run)
    assert sorted(d.name for d in domains) == ["vm-a", "vm-b"]
    (x,) = explain(events_of(log), oracle=oracle, domains=domains)
    assert x.selinux_caused
    assert x.cause is Cause.MCS and x.policy_reason == "CONSTRAINT"
    assert x.constraint is not None and "h1 dom h2" in x.constraint
    assert x.mcs is not None and not x.mcs.dominates and x.mcs.missing == "c3,c4"
    assert (x.mcs.source_level, x.mcs.target_level) == ("s0:c1,c2", "s0:c3,c4")
    assert x.vm == "vm-a" and x.vm_source is not None and x.vm_source.startswith("svirt live XML")
    assert x.target_vms == ("vm-b",)
    # the path came from vm-b's disks (same name), and the inode confirms it
    assert x.file is not None and x.file.path == str(disk_b) and x.file.inode_matches
    assert "does not dominate" in x.why and "c3,c4" in x.why
    assert any("<shareable/>" in (f.command or f.text) for f in x.fixes)
    assert x.do_not is not None
    assert "audit2allow" in x.do_not and "constraint" in x.do_not and "isolation" in x.do_not


def test_mcs_without_a_policy_from_the_contexts(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(avc_line(3, "read", VM_A, IMG_B) + "\n")
    (x,) = explain(events_of(log), oracle=None)
    assert x.cause is Cause.MCS and x.basis == "contexts" and x.policy_reason is None
    assert "no policy confirmed it" in x.why
    assert x.do_not is not None and "audit2allow" in x.do_not


@needs_policy
def test_nfs_boolean(tmp_path: Path, oracle: PolicyOracle) -> None:
    log = tmp_path / "audit.log"
    log.write_text(avc_line(4, "read", VM_A, "system_u:object_r:nfs_t:s0", name="a.img") + "\n")
    (x,) = explain(events_of(log), oracle=oracle)
    assert x.cause is Cause.BOOLEAN and ("virt_use_nfs", True) in x.booleans
    assert any(f.command == "setsebool -P virt_use_nfs 1" for f in x.fixes)
    (y,) = explain(events_of(log), oracle=None)
    assert y.cause is Cause.BOOLEAN and y.booleans == (("virt_use_nfs", True),)


@needs_policy
def test_permissive_is_not_the_cause(tmp_path: Path, oracle: PolicyOracle) -> None:
    log = tmp_path / "audit.log"
    log.write_text(
        avc_line(5, "open", VM_A, "system_u:object_r:virt_image_t:s0", permissive=1)
        + "\n"
        + syscall_line(5, VM_A, ok=True)
        + "\n"
    )
    (x,) = explain(events_of(log), oracle=oracle)
    assert not x.selinux_caused and x.mode == "permissive"
    assert "permissive=1" in x.outcome
    assert x.cause is Cause.TYPE_ENFORCEMENT  # what enforcing mode would say
    assert x.fixes[0].text.startswith("nothing failed yet")


@needs_policy
def test_dontaudit(tmp_path: Path, oracle: PolicyOracle) -> None:
    log = tmp_path / "audit.log"
    log.write_text(
        avc_line(
            6, "read", VM_A, "system_u:system_r:virtd_t:s0-s0:c0.c1023", tclass="unix_stream_socket"
        )
        + "\n"
    )
    (x,) = explain(events_of(log), oracle=oracle)
    assert x.cause is Cause.DONTAUDIT and "semodule -DB" in x.why


@needs_policy
def test_context_unknown_to_the_policy_falls_back(tmp_path: Path, oracle: PolicyOracle) -> None:
    """The seed's first example: an image left admin_home_t by `cp` from /root (a type
    Debian's reference policy does not have)."""
    log = tmp_path / "audit.log"
    log.write_text(
        avc_line(
            8,
            "read",
            "system_u:system_r:svirt_t:s0:c392,c662",
            "unconfined_u:object_r:admin_home_t:s0",
        )
        + "\n"
    )
    (x,) = explain(events_of(log), oracle=oracle)
    assert x.policy_reason == "BADTCON" and x.basis == "contexts"
    assert any("does not know the target context" in n for n in x.notes)
    assert x.cause is Cause.TYPE_ENFORCEMENT
    assert any("semanage fcontext -a -t virt_image_t" in (f.command or "") for f in x.fixes)


@needs_policy
def test_user_avc(tmp_path: Path, oracle: PolicyOracle) -> None:
    log = tmp_path / "audit.log"
    log.write_text(
        "type=USER_AVC msg=audit(1764924600.000:11): pid=1 uid=0 auid=4294967295 ses=4294967295 "
        "subj=system_u:system_r:init_t:s0 msg='avc:  denied  { status } for auid=n/a uid=0 gid=0 "
        'cmdline="" scontext=system_u:system_r:virtd_t:s0-s0:c0.c1023 '
        'tcontext=system_u:system_r:init_t:s0 tclass=system exe="/usr/lib/systemd/systemd" '
        "sauid=0 hostname=? addr=? terminal=?'\n"
    )
    (x,) = explain(events_of(log), oracle=oracle)
    # systemd's record has no permissive= field: whether it refused is not recorded.
    assert x.denial.user_space and x.selinux_caused is None and x.mode == "unknown"
    assert "userspace object manager" in x.outcome and "permissive not recorded" in x.outcome
    log.write_text(log.read_text().replace("tclass=system", "tclass=system permissive=0"))
    (y,) = explain(events_of(log), oracle=oracle)
    assert y.selinux_caused and "userspace object manager" in y.outcome
    assert x.cause is not Cause.UNKNOWN


# --- records without permissive= (older kernels) -----------------------------------------

# Seed 001's AVC (2012, a 3.x kernel, no permissive= field), joined into the one line the
# kernel wrote; and the line Red Hat's SELinux guide prints from a kernel of that time.
SEED_001_AVC = (
    "type=AVC msg=audit(1326028680.405:367): avc: denied { execmem } for pid=5404 "
    'comm="qemu-system-x86" scontext=system_u:system_r:svirt_t:s0:c121,c746 '
    "tcontext=system_u:system_r:svirt_t:s0:c121,c746 tclass=process"
)
RH_GUIDE_AVC = (
    "type=AVC msg=audit(1226874073.147:96): avc:  denied  { getattr } for  pid=2465 "
    'comm="httpd" path="/var/www/html/file1" dev=dm-0 ino=284133 '
    "scontext=unconfined_u:system_r:httpd_t:s0 tcontext=unconfined_u:object_r:samba_share_t:s0 "
    "tclass=file"
)


def test_no_permissive_field_is_unknown_not_enforcing(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(SEED_001_AVC + "\n" + RH_GUIDE_AVC + "\n")
    xs = explain(events_of(log), oracle=None)
    assert len(xs) == 2
    for x in xs:
        assert x.denial.permissive is None
        assert x.mode == "unknown" and x.selinux_caused is None
        assert x.outcome.startswith("Unknown: permissive not recorded")
        assert "permissive=0" not in x.outcome and "refused the access" not in x.outcome
        assert not x.fixes or not x.fixes[0].text.startswith("nothing failed yet")
    # The same record with the field is still enforcing: only the absence is unknown.
    log.write_text(SEED_001_AVC + " permissive=0\n")
    (y,) = explain(events_of(log), oracle=None)
    assert y.mode == "enforcing" and y.selinux_caused is True


def test_no_permissive_field_cli_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "svirt.conf"
    conf.write_text(f'state_dir = "{tmp_path}/s"\nlibvirt_run_dir = "{tmp_path}/r"\n')
    log = tmp_path / "audit.log"
    log.write_text(SEED_001_AVC + "\n")
    base = ["audit", "explain", "--config", str(conf), "--no-policy", "-if", str(log)]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "SELinux caused it? Unknown: permissive not recorded" in out
    assert "permissive=0" not in out
    assert main([*base, "--json"]) == 0
    (d,) = json.loads(capsys.readouterr().out)["denials"]
    assert d["denial"]["permissive"] is None
    assert d["selinux_caused"] is None and d["mode"] == "unknown"


# --- QEMU's title and shared static labels (issue 14) ------------------------------------


def test_vm_from_qemus_process_title(tmp_path: Path) -> None:
    """No PROCTITLE record, no live XML: the title svirt gives QEMU names the VM; a title
    the kernel cut to 15 bytes names it only through a running domain's full name."""
    log = tmp_path / "audit.log"
    line = avc_line(21, "read", VM_A, IMG_B)
    log.write_text(line.replace('comm="qemu-kvm"', 'comm="qemu:ol8-img"') + "\n")
    (x,) = explain(events_of(log), oracle=None)
    assert x.vm == "ol8-img" and x.vm_source == "QEMU's process title (comm=qemu:NAME)"
    log.write_text(line.replace('comm="qemu-kvm"', 'comm="qemu:web,1-with"') + "\n")
    (y,) = explain(events_of(log), oracle=None)
    assert y.vm is None  # cut: "web,1-with" is not the whole name
    run = tmp_path / "run"
    run.mkdir()
    disk = tmp_path / "w.img"
    disk.write_bytes(b"")
    (run / "w.xml").write_text(
        live_xml("web,1-with-a-long-name", "system_u:system_r:svirt_t:s0:c7,c8", disk, pid=1)
    )
    domains = load_live_domains(tmp_path / "state", run)
    (z,) = explain(events_of(log), oracle=None, domains=domains)
    assert z.vm == "web,1-with-a-long-name" and z.vm_source is not None
    assert "cut to 15 bytes" in z.vm_source


def test_shared_static_label_is_not_called_a_clash(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name, pid in (("st1", 4242), ("st2", 4343)):
        disk = tmp_path / f"{name}.img"
        disk.write_bytes(b"")
        xml = live_xml(name, VM_A, disk, pid=pid).replace("type='dynamic'", "type='static'")
        (run / f"{name}.xml").write_text(xml)
    domains = load_live_domains(tmp_path / "state", run)
    assert [d.seclabel_type for d in domains] == ["static", "static"]
    log = tmp_path / "audit.log"
    log.write_text(avc_line(22, "read", VM_A, IMG_B, pid=4343) + "\n")
    (x,) = explain(events_of(log), oracle=None, domains=domains)
    assert x.vm == "st2"  # told apart by the process id
    assert "domains st1, st2 share this static label by configuration" in x.notes
    assert not any("must be unique" in n for n in x.notes)


# --- many VMs, repeats ---------------------------------------------------------------------


@needs_policy
def test_generated_host_each_vm_explained(tmp_path: Path, oracle: PolicyOracle) -> None:
    gen = load_generator()
    vms = gen.make_vms(6, seed=21)
    run = tmp_path / "run"
    run.mkdir()
    for vm in vms:
        (run / f"{vm.name}.xml").write_text(gen.status_xml(vm))
    log = tmp_path / "audit.log"
    with log.open("wb") as fh:
        gen.generate(fh, events=4000, vms=vms, seed=21, qemu_weight=40)
    domains = load_live_domains(tmp_path / "state", run)
    assert len(domains) == 6
    denials = collect_denials(events_of(log))
    assert sum(d.count for d in denials) > len(denials), "repeats are grouped"
    explanations = explain(events_of(log), oracle=oracle, domains=domains, inspect_files=False)
    by_vm: dict[str, set[Cause]] = {}
    for x in explanations:
        if x.vm is not None:
            by_vm.setdefault(x.vm, set()).add(x.cause)
    expected = {
        "unlabelled": Cause.TYPE_ENFORCEMENT,
        "other-vm": Cause.MCS,
        "nfs": Cause.BOOLEAN,
        "home": Cause.TYPE_ENFORCEMENT,
        "permissive": Cause.TYPE_ENFORCEMENT,
        "ok": Cause.TYPE_ENFORCEMENT,
    }
    for vm in vms:
        assert by_vm[vm.name] == {expected[vm.scenario]}, vm
    mcs = [x for x in explanations if x.cause is Cause.MCS]
    assert mcs and all(x.target_vms for x in mcs)
    assert all(x.vm_source and "libvirt live XML" in x.vm_source for x in explanations if x.vm)


def test_explain_json_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "svirt.conf"
    conf.write_text(f'state_dir = "{tmp_path}/s"\nlibvirt_run_dir = "{tmp_path}/r"\n')
    args = [
        "audit",
        "explain",
        "--config",
        str(conf),
        "--json",
        "-if",
        str(DATA / "seed_000_raw.log"),
    ]
    if default_policy_path() is None:
        args.append("--no-policy")
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    (d,) = doc["denials"]
    assert d["selinux_caused"] is True and d["vm"] == "ol810"
    assert d["denial"]["serials"] == [15655] and d["mcs"]["source_level"] == "s0:c392,c662"
    assert d["cause"] in ("type-enforcement",)


def test_explain_no_policy_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = tmp_path / "svirt.conf"
    conf.write_text(f'state_dir = "{tmp_path}/s"\nlibvirt_run_dir = "{tmp_path}/r"\n')
    rc = main(
        [
            "audit",
            "explain",
            "--config",
            str(conf),
            "--no-policy",
            "-if",
            str(DATA / "seed_000_raw.log"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("note: reasoning from the contexts only (--no-policy)")
    assert "type enforcement" in out and "no policy confirmed it" in out
