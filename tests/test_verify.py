"""``svirt verify`` on real files with real security.selinux labels, against the real
policy. The running domains are live XML files in libvirt's status form, written
with this test's own pid (a process that is certainly alive), the way svirt writes
``<state_dir>/domains/<name>.xml`` and libvirt ``/run/libvirt/qemu/<name>.xml``.

The relabelling cases are the Fedora sVirt test page's manual check (seed 003:
``chcon -l s0:c1 F11.img`` and watch the VM fail), asked of the policy instead.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from svirt.cli.main import main
from svirt.conf import Config, config_from_mapping
from svirt.host.selinux import getfilecon, setfilecon
from svirt.policy import Access, PolicyOracle, Reason
from svirt.policy.oracle import policy_with_booleans
from svirt.policy.verify import (
    UNLABELED_CONTEXT,
    Exposure,
    VerifyReport,
    find_live_domains,
    verify,
)

pytestmark = pytest.mark.policy

POLICY = Path("/etc/selinux/default/policy/policy.33")
VM1_CATS, VM2_CATS = "c1,c2", "c3,c4"


def image_label(level: str, type_: str = "svirt_image_t") -> str:
    return f"system_u:object_r:{type_}:{level}"


def live_xml(
    name: str,
    cats: str | None,
    devices: str,
    *,
    pid: int | None = None,
    seclabel: str | None = None,
) -> str:
    if seclabel is None:
        seclabel = (
            "<seclabel type='dynamic' model='selinux' relabel='yes'>"
            f"<label>system_u:system_r:svirt_t:s0:{cats}</label>"
            f"<imagelabel>system_u:object_r:svirt_image_t:s0:{cats}</imagelabel>"
            "</seclabel>"
        )
    return (
        f"<domstatus state='running' reason='booted' pid='{pid or os.getpid()}'>"
        f"<domain type='kvm' id='1'><name>{name}</name>"
        "<memory unit='KiB'>524288</memory>"
        f"{seclabel}<devices>{devices}</devices></domain></domstatus>"
    )


def disk(path: Path, target: str, extra: str = "", *, device: str = "disk") -> str:
    return (
        f"<disk type='file' device='{device}'><source file='{path}'/>"
        f"<target dev='{target}' bus='virtio'/>{extra}</disk>"
    )


class Host:
    """A state dir with two running svirt domains, each with its own labelled image."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.libvirt = tmp_path / "libvirt-qemu"
        (self.state / "domains").mkdir(parents=True)
        self.images = tmp_path / "images"
        self.images.mkdir()
        self.a = self.images / "vm1.qcow2"
        self.b = self.images / "vm2.qcow2"
        for path, cats in ((self.a, VM1_CATS), (self.b, VM2_CATS)):
            path.write_bytes(b"\0" * 4096)
            setfilecon(path, image_label(f"s0:{cats}"))
        self.write("vm1", live_xml("vm1", VM1_CATS, disk(self.a, "vda")))
        self.write("vm2", live_xml("vm2", VM2_CATS, disk(self.b, "vda")))
        self.config_file = tmp_path / "svirt.conf"
        self.config_file.write_text(
            f'state_dir = "{self.state}"\nlibvirt_run_dir = "{self.libvirt}"\n'
        )

    @property
    def config(self) -> Config:
        return config_from_mapping(
            {"state_dir": str(self.state), "libvirt_run_dir": str(self.libvirt)}
        )

    def write(self, name: str, xml: str, *, libvirt: bool = False) -> Path:
        directory = self.libvirt if libvirt else self.state / "domains"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.xml"
        path.write_text(xml)
        return path


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture(scope="module")
def oracle() -> PolicyOracle:
    return PolicyOracle(POLICY)


def test_two_domains_with_their_own_labels_are_isolated(host: Host, oracle: PolicyOracle) -> None:
    report = verify(host.config, oracle)
    assert [d.name for d in report.domains] == ["vm1", "vm2"]
    assert all(d.source == "svirt" and d.pid == os.getpid() for d in report.domains)
    assert report.domains[0].process_label == f"system_u:system_r:svirt_t:s0:{VM1_CATS}"
    assert report.isolated
    assert report.findings == () and report.own_denials == () and report.skipped == ()
    assert {(r.domain, r.path, r.tclass, r.label) for r in report.resources} == {
        ("vm1", str(host.a), "file", image_label(f"s0:{VM1_CATS}")),
        ("vm2", str(host.b), "file", image_label(f"s0:{VM2_CATS}")),
    }
    # Own access both ways, cross access both ways, read and read-write.
    assert report.decisions == 2 + 2 * 2


def test_cli_clean_policy_but_not_enforced_is_not_isolated(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    """The policy separates the two labels, but this host does not enforce SELinux and
    both "QEMUs" are this root test process: nothing separates them, and verify says so
    (653d5a9 printed "isolation OK" and exited 0: issue 11's false assurance)."""
    rc = main(["verify", "--config", str(host.config_file)])
    out, err = capsys.readouterr()
    assert rc == 1, err
    assert "SELinux policy: isolation OK (NOT enforced on this host)" in out
    assert (
        "vm1 -> vm2: not isolated (SELinux would deny it but is not enforced; DAC allows it)" in out
    )
    assert "vm1" in out and f"svirt_t:s0:{VM1_CATS}" in out


def _only_finding(report: VerifyReport) -> tuple[str, str, tuple[Exposure, ...], str]:
    assert len(report.findings) == 1, report.findings
    f = report.findings[0]
    assert f.resource is not None
    return f.subject, f.resource.path, f.exposures, f.explanation


def test_image_relabelled_to_the_other_vms_categories(
    host: Host, oracle: PolicyOracle, capsys: pytest.CaptureFixture[str]
) -> None:
    setfilecon(host.b, image_label(f"s0:{VM1_CATS}"))
    report = verify(host.config, oracle)
    assert not report.isolated
    subject, path, exposures, text = _only_finding(report)
    assert (subject, path) == ("vm1", str(host.b))
    assert exposures == (Exposure.SAME_CATEGORIES,)
    assert report.findings[0].accesses == (Access.READ, Access.READ_WRITE)
    assert "vm1's own categories c1,c2" in text and str(host.b) in text
    # ... and vm2 can no longer use its own disk: the seed's "it should blow up".
    assert len(report.own_denials) == 1
    denial = report.own_denials[0]
    assert (denial.domain, denial.resource.path) == ("vm2", str(host.b))
    assert denial.decision.reason is Reason.CONSTRAINT

    rc = main(["verify", "--config", str(host.config_file)])
    out, _ = capsys.readouterr()
    assert rc == 1
    assert "isolation BROKEN: 1 finding" in out
    assert "vm2 cannot read-write its disk vda" in out


def test_image_relabelled_to_s0_is_reachable_by_every_vm(host: Host, oracle: PolicyOracle) -> None:
    setfilecon(host.b, image_label("s0"))
    report = verify(host.config, oracle)
    subject, path, exposures, text = _only_finding(report)
    assert (subject, path) == ("vm1", str(host.b))
    assert exposures == (Exposure.NO_CATEGORIES,)
    assert "no categories (s0)" in text
    assert report.own_denials == ()  # vm2 still dominates s0


def test_image_with_a_subset_of_categories(host: Host, oracle: PolicyOracle) -> None:
    setfilecon(host.b, image_label("s0:c1"))  # the seed's chcon -l s0:c1
    report = verify(host.config, oracle)
    _subject, _path, exposures, text = _only_finding(report)
    assert exposures == (Exposure.SUBSET_CATEGORIES,)
    assert "c1 are a subset of vm1's c1,c2" in text
    assert [d.domain for d in report.own_denials] == ["vm2"]


def test_two_vms_with_the_same_categories(host: Host, oracle: PolicyOracle) -> None:
    host.write("vm2", live_xml("vm2", VM1_CATS, disk(host.b, "vda")))
    setfilecon(host.b, image_label(f"s0:{VM1_CATS}"))
    report = verify(host.config, oracle)
    assert sorted(f.subject for f in report.findings) == ["vm1", "vm2"]
    assert all(f.exposures == (Exposure.SAME_CATEGORIES,) for f in report.findings)


def test_a_process_range_spanning_every_category(host: Host, oracle: PolicyOracle) -> None:
    label = "system_u:system_r:svirt_t:s0-s0:c0.c1023"
    seclabel = (
        f"<seclabel type='static' model='selinux' relabel='no'><label>{label}</label></seclabel>"
    )
    host.write("vm3", live_xml("vm3", None, "", seclabel=seclabel))
    report = verify(host.config, oracle)
    assert {(f.subject, f.exposures) for f in report.findings} == {
        ("vm3", (Exposure.PROCESS_RANGE,))
    }
    assert len(report.findings) == 2  # vm1's and vm2's disks


def test_an_unconfined_process_type(host: Host, oracle: PolicyOracle) -> None:
    seclabel = (
        "<seclabel type='static' model='selinux' relabel='no'>"
        "<label>system_u:system_r:virtd_t:s0</label></seclabel>"
    )
    host.write("vm3", live_xml("vm3", None, "", seclabel=seclabel))
    report = verify(host.config, oracle)
    assert {f.exposures for f in report.findings} == {(Exposure.UNCONSTRAINED_TYPE,)}
    assert "from the MCS constraint" in report.findings[0].explanation


def test_a_domain_without_selinux_label_breaks_isolation(host: Host, oracle: PolicyOracle) -> None:
    host.write("vm3", live_xml("vm3", None, "", seclabel="<seclabel type='none'/>"))
    report = verify(host.config, oracle)
    assert not report.isolated
    assert [(f.subject, f.exposures, f.resource) for f in report.findings] == [
        ("vm3", (Exposure.UNLABELED_PROCESS,), None)
    ]


def test_shared_readonly_media_are_listed_not_findings(
    host: Host, oracle: PolicyOracle, capsys: pytest.CaptureFixture[str]
) -> None:
    iso = host.images / "install.iso"
    iso.write_bytes(b"ISO")
    setfilecon(iso, image_label("s0", "virt_content_t"))
    shared = host.images / "shared.img"
    shared.write_bytes(b"")
    setfilecon(shared, image_label("s0", "svirt_image_t"))
    devices = (
        disk(host.b, "vda")
        + disk(iso, "sda", "<readonly/>", device="cdrom")
        + disk(shared, "vdb", "<shareable/>")
    )
    host.write("vm2", live_xml("vm2", VM2_CATS, devices))
    report = verify(host.config, oracle)
    assert report.isolated
    by_path = {s.resource.path: s for s in report.shared}
    assert by_path[str(iso)].readers == ("vm1",) and by_path[str(iso)].writers == ()
    assert by_path[str(shared)].writers == ("vm1",)
    assert report.own_denials == ()
    main(["verify", "--config", str(host.config_file)])
    out, _ = capsys.readouterr()
    assert f"vm2 disk sda {iso} labelled" in out and "readable by vm1" in out


def test_block_device_resources_use_blk_file(host: Host, oracle: PolicyOracle) -> None:
    node = host.tmp / "loop-node"
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    setfilecon(node, image_label(f"s0:{VM1_CATS}"))
    block = (
        f"<disk type='block' device='disk'><source dev='{node}'/>"
        "<target dev='vdb' bus='virtio'/></disk>"
    )
    host.write("vm2", live_xml("vm2", VM2_CATS, disk(host.b, "vda") + block))
    report = verify(host.config, oracle)
    res = next(r for r in report.resources if r.path == str(node))
    assert res.tclass == "blk_file"
    subject, path, exposures, _ = _only_finding(report)
    assert (subject, path, exposures) == ("vm1", str(node), (Exposure.SAME_CATEGORIES,))


def test_dead_pid_and_non_status_xml_are_skipped(host: Host, oracle: PolicyOracle) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # reaped: the pid no longer exists
    host.write("gone", live_xml("gone", "c7,c8", disk(host.a, "vda"), pid=pid))
    host.write("plain", "<domain type='kvm'><name>plain</name><devices/></domain>")
    host.write("broken", "<domstatus pid='1'><domain>")
    report = verify(host.config, oracle)
    assert [d.name for d in report.domains] == ["vm1", "vm2"]
    reasons = {s.path.name: s.reason for s in report.skipped}
    assert reasons["gone.xml"] == f"not running (pid {pid} does not exist)"
    assert "not a status XML" in reasons["plain.xml"]
    assert "broken.xml" in reasons


def test_libvirt_run_dir_domains_are_checked_too(host: Host, oracle: PolicyOracle) -> None:
    lv = host.images / "lv.qcow2"
    lv.write_bytes(b"")
    setfilecon(lv, image_label(f"s0:{VM2_CATS}"))
    host.write("guest", live_xml("guest", "c5,c6", disk(lv, "vda")), libvirt=True)
    domains, skipped = find_live_domains(host.config)
    assert [(d.name, d.source) for d in domains] == [
        ("vm1", "svirt"),
        ("vm2", "svirt"),
        ("guest", "libvirt"),
    ]
    assert skipped == []
    report = verify(host.config, oracle)
    # lv carries vm2's categories: vm2 reaches the libvirt guest's disk.
    subject, path, exposures, _ = _only_finding(report)
    assert (subject, path, exposures) == ("vm2", str(lv), (Exposure.SAME_CATEGORIES,))


def test_same_name_in_svirt_and_libvirt_is_told_apart(host: Host, oracle: PolicyOracle) -> None:
    other = host.images / "other.qcow2"
    other.write_bytes(b"")
    setfilecon(other, image_label("s0:c5,c6"))
    host.write("vm1", live_xml("vm1", "c5,c6", disk(other, "vda")), libvirt=True)
    report = verify(host.config, oracle)
    assert report.isolated
    assert {r.domain for r in report.resources} == {"vm1 (svirt)", "vm1 (libvirt)", "vm2"}


def test_missing_and_unlabelled_files_are_notes(host: Host, oracle: PolicyOracle) -> None:
    missing = host.images / "missing.qcow2"
    bare = host.images / "bare.raw"
    bare.write_bytes(b"")
    if getfilecon(bare) is not None:
        os.removexattr(bare, "security.selinux")
    devices = disk(host.b, "vda") + disk(missing, "vdb") + disk(bare, "vdc")
    host.write("vm2", live_xml("vm2", VM2_CATS, devices))
    report = verify(host.config, oracle)
    notes = {r.path: r for r in report.resources if r.problem}
    assert notes[str(missing)].problem == "cannot examine: No such file or directory"
    assert notes[str(missing)].tclass is None
    assert notes[str(bare)].label == UNLABELED_CONTEXT
    # unlabeled_t is not usable by svirt_t: the VM would fail on it, nobody else reaches it.
    assert [(o.domain, o.resource.path) for o in report.own_denials] == [("vm2", str(bare))]
    assert report.isolated


def test_boolean_risk_and_granting_boolean(host: Host, tmp_path: Path) -> None:
    setfilecon(host.b, image_label("s0", "nfs_t"))
    report = verify(host.config, PolicyOracle(POLICY))
    assert report.isolated  # virt_use_nfs is off: nobody, vm2 included, may use it
    assert report.own_denials[0].decision.reason is Reason.BOOLEAN
    risk = report.boolean_risks[0]
    assert (risk.subject, risk.resource.path) == ("vm1", str(host.b))
    assert ("virt_use_nfs", True) in risk.booleans

    nfs_on = tmp_path / "policy.33"
    nfs_on.write_bytes(policy_with_booleans(POLICY, {"virt_use_nfs": True}))
    report = verify(host.config, PolicyOracle(nfs_on))
    _subject, _path, exposures, text = _only_finding(report)
    assert exposures == (Exposure.NO_CATEGORIES, Exposure.BOOLEAN)
    assert "virt_use_nfs=on" in text
    assert report.findings[0].booleans == (("virt_use_nfs", True),)


def test_json_output(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    setfilecon(host.b, image_label("s0"))
    rc = main(["verify", "--json", "--config", str(host.config_file), "--backend", "libsepol"])
    out, err = capsys.readouterr()
    assert rc == 1, err
    data = json.loads(out)
    assert data["isolated"] is False
    assert data["backend"] == "libsepol"
    assert data["policy"] == str(POLICY)
    assert [d["name"] for d in data["domains"]] == ["vm1", "vm2"]
    (finding,) = data["findings"]
    assert finding["subject"] == "vm1"
    assert finding["exposures"] == ["no-categories"]
    assert finding["accesses"] == ["read", "read-write"]
    assert finding["resource"]["path"] == str(host.b)
    assert finding["resource"]["class"] == "file"


def test_no_running_domains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "svirt.conf"
    conf.write_text(f'state_dir = "{tmp_path}/state"\nlibvirt_run_dir = "{tmp_path}/lv"\n')
    rc = main(["verify", "--config", str(conf)])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "no running domains" in out


def test_missing_policy_is_a_one_line_error(
    host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["verify", "--config", str(host.config_file), "--policy", str(tmp_path / "none")])
    _, err = capsys.readouterr()
    assert rc == 1
    assert err.strip().splitlines() == [
        f"error: cannot read binary policy {tmp_path / 'none'}: No such file or directory"
    ]
