"""svirt and the real libvirt 9.0 on one host and one file (issue 12).

libvirtd runs in a private mount namespace (``libvirt_ns``) with ``remember_owner = 1``
and its own QEMU user (``libvirt-qemu``); svirt runs there too, once with its own QEMU
user (``svirt-qemu``) and once with libvirt's. SELinux is off on our machines, so libvirt
stacks only its DAC driver, while svirt names ``selinux`` and writes labels for real.
Every scenario ends by checking that the image's original owner, mode and label are
back and that no ``trusted.libvirt.*`` xattr is left, or, where libvirt alone loses
them, that svirt said so.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest
from libvirt_ns import LibvirtNamespace, Svirt

pytestmark = pytest.mark.libvirt

LABEL = b"system_u:object_r:virt_image_t:s0\0"
OWNER = (1001, 1002)
MODE = 0o640


def image(work: Path, name: str) -> Path:
    p = work / "images" / name
    p.write_bytes(b"\0" * 4096)
    os.truncate(p, 1 << 20)
    os.chown(p, *OWNER)
    os.chmod(p, MODE)
    os.setxattr(p, "security.selinux", LABEL)
    return p


def domain(work: Path, name: str, img: Path, flags: str = "") -> Path:
    xml = work / f"{name}.xml"
    xml.write_text(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{img}'/><target dev='vda' bus='virtio'/>{flags}</disk>"
        "</devices></domain>"
    )
    return xml


def remembered(p: Path) -> dict[str, bytes]:
    return {n: os.getxattr(p, n) for n in sorted(os.listxattr(p)) if n.startswith("trusted.")}


def assert_original(p: Path) -> None:
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == OWNER, f"owner of {p}: {st.st_uid}:{st.st_gid}"
    assert st.st_mode & 0o7777 == MODE
    assert os.getxattr(p, "security.selinux") == LABEL
    assert remembered(p) == {}


def test_xattrs_byte_identical(lv: LibvirtNamespace, svirt: Svirt, work: Path) -> None:
    """libvirt alone, then svirt alone, on the same image: the same DAC xattrs, byte
    for byte (the timestamp is the boot time, which libvirt derives per start ±1 s)."""
    img = image(work, "a.img")
    lv.virsh("create", str(domain(work, "lv-a", img)))
    theirs = remembered(img)
    lv.virsh("destroy", "lv-a")
    assert_original(img)
    svirt.start(domain(work, "sv-a", img))
    ours = remembered(img)
    svirt.ok("stop", "sv-a", "--force")
    assert_original(img)
    dac = [n for n in theirs if n.endswith("dac")]
    assert sorted(dac) == [
        "trusted.libvirt.security.dac",
        "trusted.libvirt.security.ref_dac",
        "trusted.libvirt.security.timestamp_dac",
    ]
    assert ours["trusted.libvirt.security.dac"] == theirs["trusted.libvirt.security.dac"]
    assert ours["trusted.libvirt.security.dac"] == b"+1001:+1002"
    assert ours["trusted.libvirt.security.ref_dac"] == theirs["trusted.libvirt.security.ref_dac"]
    ts_ours = int(ours["trusted.libvirt.security.timestamp_dac"])
    ts_theirs = int(theirs["trusted.libvirt.security.timestamp_dac"])
    assert abs(ts_ours - ts_theirs) <= 1
    # svirt's SELinux driver remembers in the same form libvirt's would.
    assert ours["trusted.libvirt.security.selinux"] == LABEL.rstrip(b"\0")
    assert ours["trusted.libvirt.security.ref_selinux"] == b"1"


def test_libvirt_runs_svirt_fails(lv: LibvirtNamespace, svirt: Svirt, work: Path) -> None:
    """svirt cannot start on an image a libvirt domain writes; its failed start leaves
    libvirt's remembered owner exactly as it was, and libvirt restores it on stop."""
    img = image(work, "a.img")
    lv.virsh("create", str(domain(work, "lv-a", img)))
    before = remembered(img)
    code, _out, err = svirt("start", str(domain(work, "sv-a", img)))
    assert code == 1
    if svirt.user == "libvirt-qemu":
        # Same QEMU user: svirt may share the owner, and QEMU refuses the image lock.
        assert 'Failed to get "write" lock' in err
        assert "Is another process using the image" in err
    else:
        assert "Setting different DAC user or group on" in err
        assert "which is already in use" in err
    assert remembered(img) == before
    lv.virsh("destroy", "lv-a")
    assert_original(img)


def test_svirt_runs_libvirt_fails(lv: LibvirtNamespace, svirt: Svirt, work: Path) -> None:
    """libvirt's known defect: its failed start on an image a running domain uses
    removes the remembered xattrs. svirt notices: doctor says whose memory was erased,
    and stop puts the true original back from svirt's own copy and warns."""
    img = image(work, "a.img")
    svirt.start(domain(work, "sv-a", img))
    before = remembered(img)
    assert before["trusted.libvirt.security.dac"] == b"+1001:+1002"
    res = lv.virsh("create", str(domain(work, "lv-a", img)), check=False)
    assert res.returncode != 0
    after = remembered(img)
    if svirt.user == "libvirt-qemu":
        # Same QEMU user: libvirt counts itself in, QEMU refuses the image lock, and
        # libvirt's cleanup removes the *_dac xattrs while svirt's VM still runs.
        assert 'Failed to get "write" lock' in res.stderr
        assert "trusted.libvirt.security.dac" not in after
        code, doc, _ = svirt("doctor", str(img))
        assert code == 1 and "[erased]" in doc and "svirt domain 'sv-a'" in doc, doc
        assert "the original owner is +1001:+1002" in doc
    else:
        assert "Setting different DAC user or group on" in res.stderr
        assert after == before  # libvirt refused before changing anything
    code, out, err = svirt("stop", "sv-a", "--force")
    assert code == 0, err
    svirt.started.remove("sv-a")
    if svirt.user == "libvirt-qemu":
        assert "warning: the remembered owner of" in err and "put back from that copy" in err
        # issue 14: the summary counts it, and the image's line says it
        assert "1 put back from svirt's own copy" in out
        assert "owner restored to +1001:+1002, put back from svirt's own copy" in out
    else:
        assert "erased" not in out + err
    assert_original(img)


@pytest.mark.parametrize("first", ["libvirt", "svirt"])
@pytest.mark.parametrize("flag", ["<readonly/>", "<shareable/>"])
def test_share_image(lv: LibvirtNamespace, svirt: Svirt, work: Path, first: str, flag: str) -> None:
    """A read-only or shareable image used by a libvirt and an svirt domain at once,
    started and stopped in both orders."""
    img = image(work, "shared.img")
    lv_xml = domain(work, "lv-s", img, flag)
    sv_xml = domain(work, "sv-s", img, flag)
    if first == "libvirt":
        lv.virsh("create", str(lv_xml))
        svirt.start(sv_xml)
        lv.virsh("destroy", "lv-s")
        out = svirt.ok("stop", "sv-s", "--force")
    else:
        svirt.start(sv_xml)
        lv.virsh("create", str(lv_xml))
        out = svirt.ok("stop", "sv-s", "--force")
        lv.virsh("destroy", "lv-s")
        out += svirt("doctor", str(img))[1]
    svirt.started.remove("sv-s")
    # Neither side remembers read-only or shareable media (libvirt's rule), so nothing
    # is left in the xattrs, and neither restores them: svirt says so at stop.
    assert remembered(img) == {}
    what = "read-only" if flag == "<readonly/>" else "shareable"
    # issue 14: the note names what stays (the label, and the owner only if svirt gave it)
    assert f"note: {img} is {what}: like libvirt, svirt leaves the label " in out
    assert "put it back by hand" in out or "put them back by hand" in out
    assert os.stat(img).st_mode & 0o7777 == MODE
    st = os.stat(img)
    last = "svirt" if first == "libvirt" else "libvirt"
    owners = {"libvirt": 64055, "svirt": pwd.getpwnam(svirt.user).pw_uid}
    # The owner is the QEMU user of whoever chowned it last, or the original when
    # svirt's QEMU user could already use it.
    assert st.st_uid in (owners[last], owners[first], OWNER[0])
    label = os.getxattr(img, "security.selinux")
    assert label in (
        LABEL,
        b"system_u:object_r:virt_content_t:s0\0",
        b"system_u:object_r:svirt_image_t:s0\0",
    )


def test_libvirt_crash_left_to_libvirt(lv: LibvirtNamespace, svirt: Svirt, work: Path) -> None:
    """libvirtd and its QEMU killed: the status XML stays, and libvirtd restores the
    image when it restarts. svirt's doctor says so, and recover leaves the file alone
    (it would otherwise remove what libvirt needs and the image would end root:root)."""
    img = image(work, "a.img")
    lv.virsh("create", str(domain(work, "lv-a", img)))
    lv.kill_libvirt()
    assert (lv.run_dir / "lv-a.xml").exists()
    code, doc, _ = svirt("doctor", str(img))
    assert code == 1 and "[libvirt-pending]" in doc and "libvirtd will restore" in doc, doc
    out = svirt.ok("recover", "--apply", str(img))
    assert "owner ->" not in out, out
    assert remembered(img)["trusted.libvirt.security.ref_dac"] == b"1"
    lv.start_daemons()
    deadline = time.monotonic() + 30
    while (lv.run_dir / "lv-a.xml").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # libvirtd reconnects to (and cleans up) its domains in threads
    assert not (lv.run_dir / "lv-a.xml").exists()
    assert_original(img)


def test_status_xml_read_everywhere(lv: LibvirtNamespace, svirt: Svirt, work: Path) -> None:
    """libvirt's status XML is read by list, verify, doctor and the MCS ledger."""
    img = image(work, "a.img")
    own = image(work, "b.img")
    lv.virsh("create", str(domain(work, "lv-a", img)))
    pid = lv.qemu_pids()["lv-a"]
    svirt.start(domain(work, "sv-b", own))
    listing = svirt.ok("list")
    line = next(ln for ln in listing.splitlines() if "lv-a" in ln)
    assert "libvirt" in line and str(pid) in line
    assert "sv-b" in listing
    verify = svirt("verify")
    assert "lv-a" in verify[1] + verify[2]
    _, doc, _ = svirt("doctor", "--json")
    assert '"lv-a"' in doc
    svirt.ok("stop", "sv-b", "--force")
    svirt.started.remove("sv-b")
    lv.virsh("destroy", "lv-a")
    assert_original(img)
    assert_original(own)
