"""Pre-flight with the real reference policy: the seed's static relabel='no' story (seed
000: image labelled admin_home_t / virt_image_t, VM static at svirt_t:s0:c392,c662) is
predicted and explained before QEMU starts; a correctly labelled VM has no findings; on
an enforcing host the start fails, elsewhere it warns, and the warning reaches
``svirt start``'s output."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import config, domain_xml, make_file
from svirt.audit.explain import Cause
from svirt.cli.main import main
from svirt.conf import Config
from svirt.domain import Domain, parse_domain
from svirt.errors import LaunchError, PolicyError
from svirt.launch.lifecycle import start_domain, stop_domain
from svirt.launch.preflight import check_before_start, preflight_check, resource_accesses
from svirt.policy.oracle import Access, Decision, PolicyOracle, Reason
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainStore

SEED_LABEL = "system_u:system_r:svirt_t:s0:c392,c662"
ADMIN_HOME = "unconfined_u:object_r:admin_home_t:s0"  # seed 000, `ls -dZ` before relabel
VIRT_IMAGE = "system_u:object_r:virt_image_t:s0"  # seed 000, the AVC's tcontext
STATIC_NO = (
    f"<seclabel type='static' model='selinux' relabel='no'><label>{SEED_LABEL}</label></seclabel>"
)


@pytest.fixture(scope="module")
def oracle() -> PolicyOracle:
    return PolicyOracle()


def disk(path: Path, target: str, flags: str = "") -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{path}'/><target dev='{target}' bus='virtio'/>{flags}</disk>"
    )


def prepared(cfg: Config, xml: str) -> Domain:
    """Labels generated and resources labelled, as the monitor has them before spawn."""
    return SecurityManager(cfg).label_domain(parse_domain(xml))


def test_seed_static_relabel_no_admin_home(
    selinux_config: Config, tmp_path: Path, oracle: PolicyOracle
) -> None:
    img = make_file(tmp_path / "OL8U10_x86_64-kvm-b258.qcow2", label=ADMIN_HOME)
    live = prepared(selinux_config, domain_xml("ol8img", [disk(img, "vda")], seclabels=STATIC_NO))
    assert os.getxattr(img, "security.selinux").rstrip(b"\0").decode() == ADMIN_HOME  # untouched

    [f] = preflight_check(selinux_config, live, oracle, domains=[])
    assert (f.owner, f.path, f.label, f.tclass) == ("disk vda", str(img), ADMIN_HOME, "file")
    assert f.access is Access.READ_WRITE
    # Debian's reference policy has no admin_home_t: the kernel would see unlabeled_t.
    assert f.decision.reason is Reason.BADTCON
    assert f.cause is Cause.TYPE_ENFORCEMENT
    assert "admin_home_t is not accessible to svirt_t" in f.explanation.why
    assert any("does not know the label" in n for n in f.notes)
    commands = [x.command for x in f.fixes if x.command]
    # First the seed's own fix: let svirt relabel (relabel='yes' with the same label).
    assert commands[0] == (
        f"<seclabel type='static' model='selinux' relabel='yes'><label>{SEED_LABEL}</label>"
        "</seclabel>"
    )
    assert f"chcon -t svirt_image_t -l s0:c392,c662 {img}" in commands
    assert any(c.startswith("semanage fcontext -a -t virt_image_t") for c in commands)
    assert f.explanation.do_not is not None and "audit2allow" in f.explanation.do_not
    assert "relabel='yes'" in f.summary() and "\n" not in f.summary()


def test_seed_virt_image_t_is_a_te_denial_from_the_policy(
    selinux_config: Config, tmp_path: Path, oracle: PolicyOracle
) -> None:
    img = make_file(tmp_path / "ol810.qcow2", label=VIRT_IMAGE)
    live = prepared(selinux_config, domain_xml("ol810", [disk(img, "vda")], seclabels=STATIC_NO))
    [f] = preflight_check(selinux_config, live, oracle, domains=[])
    assert f.decision.reason is Reason.TERULE
    assert f.cause is Cause.TYPE_ENFORCEMENT
    assert f.explanation.basis.startswith("policy ")
    commands = [x.command for x in f.fixes if x.command]
    assert f"chcon -t svirt_image_t -l s0:c392,c662 {img}" in commands
    assert f"<source file='{img}'><seclabel model='selinux' relabel='yes'/></source>" in commands


def test_mcs_denial_names_both_levels_and_never_audit2allow(
    selinux_config: Config, tmp_path: Path, oracle: PolicyOracle
) -> None:
    img = make_file(tmp_path / "other.img", label="system_u:object_r:svirt_image_t:s0:c1,c2")
    live = prepared(selinux_config, domain_xml("mcs", [disk(img, "vda")], seclabels=STATIC_NO))
    [f] = preflight_check(selinux_config, live, oracle, domains=[])
    assert f.decision.reason is Reason.CONSTRAINT
    assert f.cause is Cause.MCS
    assert "s0:c392,c662" in f.explanation.why and "s0:c1,c2" in f.explanation.why
    assert f"chcon -l s0:c392,c662 {img}" in [x.command for x in f.fixes]
    assert all("audit2allow" not in (x.command or "") for x in f.fixes)
    do_not = f.explanation.do_not or ""
    assert do_not.startswith("Do not use audit2allow: this is an MCS constraint violation")


def test_boolean_denial_says_which_boolean(
    selinux_config: Config, tmp_path: Path, oracle: PolicyOracle
) -> None:
    img = make_file(tmp_path / "nfs.img", label="system_u:object_r:nfs_t:s0")
    live = prepared(selinux_config, domain_xml("nfs", [disk(img, "vda")], seclabels=STATIC_NO))
    [f] = preflight_check(selinux_config, live, oracle, domains=[])
    assert f.cause is Cause.BOOLEAN
    assert "setsebool -P virt_use_nfs 1" in [x.command for x in f.fixes]


def test_labelled_domain_has_no_findings(
    selinux_config: Config, tmp_path: Path, oracle: PolicyOracle
) -> None:
    rw = make_file(tmp_path / "rw.img")
    iso = make_file(tmp_path / "cd.iso", label="system_u:object_r:user_home_t:s0")
    kernel = make_file(tmp_path / "vmlinuz", label="system_u:object_r:user_home_t:s0")
    xml = (
        f"<domain type='kvm'><name>ok</name><memory>65536</memory><os><type>hvm</type>"
        f"<kernel>{kernel}</kernel></os><devices>{disk(rw, 'vda')}"
        f"{disk(iso, 'vdb', '<readonly/>')}</devices></domain>"
    )
    live = prepared(selinux_config, xml)
    accesses = {p: a for _, p, a in resource_accesses(live)}
    assert accesses == {
        str(rw): Access.READ_WRITE,
        str(iso): Access.READ,
        str(kernel): Access.READ,
    }
    assert preflight_check(selinux_config, live, oracle, domains=[]) == []


def test_planned_labels_override_the_disk(
    selinux_config: Config, tmp_path: Path, oracle: PolicyOracle
) -> None:
    img = make_file(tmp_path / "a.img", label=VIRT_IMAGE)
    live = prepared(selinux_config, domain_xml("plan", [disk(img, "vda")], seclabels=STATIC_NO))
    ok = {str(img): "system_u:object_r:svirt_image_t:s0:c392,c662"}
    assert preflight_check(selinux_config, live, oracle, labels=ok, domains=[]) == []


def test_unconfined_domain_has_nothing_to_check(selinux_config: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", label=VIRT_IMAGE)
    xml = domain_xml("none", [disk(img, "vda")], seclabels="<seclabel type='none'/>")
    assert preflight_check(selinux_config, parse_domain(xml), domains=[]) == []


def test_check_before_start_warns_here_and_fails_when_enforcing(
    selinux_config: Config, tmp_path: Path
) -> None:
    img = make_file(tmp_path / "a.img", label=VIRT_IMAGE)
    mgr = SecurityManager(selinux_config)
    live = mgr.label_domain(parse_domain(domain_xml("e", [disk(img, "vda")], seclabels=STATIC_NO)))
    drv = mgr.selinux
    assert drv is not None and not drv.enforcing  # SELinux is off on this kernel
    [warning] = check_before_start(selinux_config, live, drv)
    assert warning.startswith(f"pre-flight: disk vda {img} labelled {VIRT_IMAGE}")
    assert warning.endswith("(SELinux is off on this host; an enforcing host would refuse it)")
    # An enforcing host cannot be had here; the driver's reading of it is what decides.
    drv.enforcing = True
    with pytest.raises(LaunchError) as err:
        check_before_start(selinux_config, live, drv)
    assert str(err.value).startswith("pre-flight: QEMU would be denied by SELinux: disk vda")
    assert "\n" not in str(err.value)
    assert check_before_start(selinux_config, live, None) == []


def test_no_policy_is_a_warning(tmp_path: Path) -> None:
    cfg = config(tmp_path, policy_path=str(tmp_path / "missing.33"))
    img = make_file(tmp_path / "a.img", label=VIRT_IMAGE)
    mgr = SecurityManager(cfg)
    live = mgr.label_domain(parse_domain(domain_xml("np", [disk(img, "vda")], seclabels=STATIC_NO)))
    [warning] = check_before_start(cfg, live, mgr.selinux)
    assert warning.startswith("pre-flight skipped: cannot ask the policy (cannot read binary")


# --- through the real lifecycle, with a real QEMU -----------------------------------------


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    """Images where the QEMU user can reach them (pytest's tmp dirs are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="svirt-preflight-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def vm_xml(name: str, img: Path) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os>{STATIC_NO}"
        f"<devices>{disk(img, 'vda')}</devices></domain>"
    )


@pytest.mark.qemu
def test_start_reports_the_warning(vm_dir: Path) -> None:
    cfg = config(vm_dir)
    img = make_file(vm_dir / "seed.img", label=VIRT_IMAGE)
    os.truncate(img, 1 << 20)
    try:
        res = start_domain(cfg, parse_domain(vm_xml("seed", img)))
        # SELinux is off here, so QEMU runs; the denials it would get are reported: the
        # disk's label, and execmem for the TCG translator (virt_use_execmem is off).
        [warning] = [w for w in res.warnings if "disk vda" in w]
        [execmem] = [w for w in res.warnings if "execmem" in w]
        assert "QEMU under TCG" in execmem and "virt_use_execmem" in execmem
        assert "cannot read-write it (type enforcement" in warning
        assert "fix: <seclabel type='static' model='selinux' relabel='yes'>" in warning
    finally:
        for rec in list(DomainStore(cfg.state_dir).records()):
            stop_domain(cfg, rec.domain.name, force=True)


@pytest.mark.qemu
def test_svirt_start_prints_the_warning(vm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = make_file(vm_dir / "seed.img", label=VIRT_IMAGE)
    os.truncate(img, 1 << 20)
    conf = vm_dir / "svirt.conf"
    conf.write_text(f'security_driver = ["selinux"]\nstate_dir = "{vm_dir / "state"}"\n')
    xml = vm_dir / "seed.xml"
    xml.write_text(vm_xml("seedcli", img))
    try:
        assert main(["start", "--config", str(conf), str(xml)]) == 0
        out, err = capsys.readouterr()
        assert "Domain 'seedcli' started" in out
        [line] = [ln for ln in err.splitlines() if ln.startswith("warning: pre-flight: disk")]
        assert f"disk vda {img} labelled {VIRT_IMAGE}" in line
        assert "an enforcing host would refuse it" in line
    finally:
        assert main(["stop", "--config", str(conf), "--force", "seedcli"]) == 0


class _FailingOracle(PolicyOracle):
    """An injected fault: the policy backend fails mid-check."""

    def decide(self, scon: str, tcon: str, tclass: str, perms: object) -> Decision:  # type: ignore[override]
        raise PolicyError("libsepol could not compute the decision (code -1)")


def test_a_failing_check_warns_and_does_not_block(selinux_config: Config, tmp_path: Path) -> None:
    img = make_file(tmp_path / "a.img", label=VIRT_IMAGE)
    mgr = SecurityManager(selinux_config)
    live = mgr.label_domain(parse_domain(domain_xml("f", [disk(img, "vda")], seclabels=STATIC_NO)))
    drv = mgr.selinux
    assert drv is not None
    drv.bind_oracle(_FailingOracle())
    drv.enforcing = True
    assert check_before_start(selinux_config, live, drv) == [
        "pre-flight failed: libsepol could not compute the decision (code -1)"
    ]
