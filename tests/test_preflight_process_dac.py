"""Pre-flight beyond file labels (issue 10): the process permissions (the daemon's
transition to the VM's label, the entrypoint, execmem under TCG; a static label the policy
does not know is libvirt's "Invalid security label") and DAC (the QEMU identity must
search every parent directory and open the file), decided by the real policy and by the
kernel in a child that takes the QEMU identity."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import config, make_file
from svirt.cli.main import main
from svirt.domain import parse_domain
from svirt.errors import XMLError
from svirt.host.ids import resolve_identity
from svirt.launch.preflight import dac_findings, process_findings
from svirt.policy.oracle import PolicyOracle

DAEMON = "system_u:system_r:virtd_t:s0-s0:c0.c1023"
IMAGE = "system_u:object_r:svirt_image_t:s0:c1,c2"


@pytest.fixture(scope="module")
def oracle() -> PolicyOracle:
    return PolicyOracle()


@pytest.fixture
def top() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="svirt-pf-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def xml(img: Path, *, dtype: str = "kvm", label: str = "system_u:system_r:svirt_t:s0:c1,c2") -> str:
    return (
        f"<domain type='{dtype}'><name>pf</name><memory unit='MiB'>32</memory>"
        f"<seclabel type='static' model='selinux' relabel='no'><label>{label}</label>"
        f"</seclabel><devices><disk type='file' device='disk'><source file='{img}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )


def test_tcg_execmem_is_predicted_with_its_boolean(oracle: PolicyOracle, top: Path) -> None:
    img = make_file(top / "a.img", label=IMAGE)
    cfg = config(top)
    found = process_findings(
        cfg, parse_domain(xml(img, dtype="qemu")), oracle, daemon_context=DAEMON
    )
    [f] = found
    assert f.verb == "execmem" and f.tclass == "process"
    assert "virt_use_execmem" in f.summary()
    assert any("Could not allocate dynamic translator buffer" in n for n in f.notes)


def test_transition_to_a_label_the_daemon_may_not_enter(oracle: PolicyOracle, top: Path) -> None:
    """A static unconfined_t label: virtd_t has no transition to it (libvirt's start
    would fail at exec); predicted before start."""
    img = make_file(top / "a.img", label=IMAGE)
    dom = parse_domain(xml(img, label="unconfined_u:unconfined_r:unconfined_t:s0:c1,c2"))
    found = process_findings(config(top), dom, oracle, daemon_context=DAEMON)
    verbs = {f.verb for f in found}
    assert "transition" in verbs
    assert "entrypoint" not in verbs or any(f.path.endswith("qemu-system-x86_64") for f in found)


@pytest.mark.parametrize(
    "label",
    ["system_u:system_r:nosuch_t:s0:c1,c2", "system_u:system_r:svirt_t"],
    ids=["unknown-type", "no-level"],
)
def test_invalid_static_label_is_a_validation_error(
    oracle: PolicyOracle, top: Path, label: str
) -> None:
    img = make_file(top / "a.img", label=IMAGE)
    with pytest.raises(XMLError, match=f"^XML error: Invalid security label {label}$"):
        process_findings(
            config(top), parse_domain(xml(img, label=label)), oracle, daemon_context=DAEMON
        )


def test_image_in_a_0700_directory_names_the_directory_and_the_uid_gid(
    top: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kernel decides (a child as svirt-qemu calls access(2)): `validate --preflight`
    names the directory QEMU cannot search, the QEMU uid:gid, and the fix."""
    private = top / "private"
    private.mkdir(mode=0o700)
    img = make_file(private / "a.img", label=IMAGE)
    ident = resolve_identity("svirt-qemu", "svirt-qemu")
    [f] = dac_findings(parse_domain(xml(img)), ident)
    assert (f.blocked, f.need) == (str(private), "search")
    assert f"{ident.uid}:{ident.gid} (svirt-qemu)" in f.summary()
    assert f"setfacl -m u:{ident.uid}:x {private}" in f.summary()

    conf = top / "c.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{top / "state"}"\nvm_identity = "off"\n'
    )
    dom = top / "d.xml"
    dom.write_text(xml(img).replace("relabel='no'", "relabel='yes'"))
    assert main(["validate", "--config", str(conf), "--preflight", str(dom)]) == 1
    out = capsys.readouterr().out
    assert f"cannot search directory {private} (mode 0700 0:0)" in out
    assert f"QEMU user {ident.uid}:{ident.gid} (svirt-qemu)" in out
    # Opened up, the same check passes (the answer comes from the kernel, not a guess).
    # (the image itself is svirt's to chown at start, as the dry run plans).
    private.chmod(0o711)
    assert dac_findings(parse_domain(xml(img)), ident, granted=frozenset({str(img)})) == []


def test_unreadable_file_is_found_unless_svirt_will_chown_it(top: Path) -> None:
    img = make_file(top / "a.img", label=IMAGE, mode=0o600)
    ident = resolve_identity("svirt-qemu", "svirt-qemu")
    [f] = dac_findings(parse_domain(xml(img)), ident)
    assert (f.blocked, f.need) == (str(img), "read-write")
    assert dac_findings(parse_domain(xml(img)), ident, granted=frozenset({str(img)})) == []
    os.chown(img, ident.uid, ident.gid)
    assert dac_findings(parse_domain(xml(img)), ident) == []
