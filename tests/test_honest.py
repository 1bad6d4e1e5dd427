"""Honest commands (issue 14): every status line says what happened to each resource.

Each test first does what a new user did when the old messages misled (real files,
real xattrs, chown and ACLs, real QEMU under TCG through the CLI), then asserts the new
wording and that it matches the files. The old texts it replaces:

- ``svirt start`` printed an "image label" it never applied (``relabel='no'``);
- ``stop`` said "every remembered label and owner restored" for shareable/read-only
  media it left as they were and for files ``remember_owner = 0`` reset to defaults;
- ``label --dry-run`` showed a chown that is skipped (world-readable ISO) and hid the
  ACL edits of ``dac_mode = "acl"``;
- a plain ``stop`` of a guest that never powers down waited 10 s in silence;
- stop's read-only note told per-VM identity users to put back an owner never changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import make_file
from svirt.cli.main import main
from svirt.host import selinux as host_selinux
from svirt.host.ids import resolve_gid, resolve_uid
from svirt.security import remember as rem

pytestmark = pytest.mark.qemu

ORIG = "system_u:object_r:virt_image_t:s0"
CONTENT = "system_u:object_r:virt_content_t:s0"
SHARED = "system_u:object_r:svirt_image_t:s0"
QEMU = f"+{resolve_uid('svirt-qemu')}:+{resolve_gid('svirt-qemu')}"
NEVER = "like libvirt, svirt never restores it (other domains may use it)"


class Env:
    """A directory QEMU's user can reach, an svirt.conf and the CLI run in-process."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.conf = root / "svirt.conf"
        self.configure()

    def configure(self, extra: str = "", identity: str = "off") -> None:
        self.conf.write_text(
            'security_driver = ["selinux"]\n'
            f'state_dir = "{self.dir / "state"}"\n'
            f'libvirt_run_dir = "{self.dir / "libvirt-run"}"\n'
            f'vm_identity = "{identity}"\n' + extra
        )

    def image(self, name: str, *, mode: int = 0o600) -> Path:
        p = make_file(self.dir / name, label=ORIG, mode=mode)
        os.truncate(p, 1 << 20)
        return p

    def domain(self, name: str, disks: str, seclabel: str = "") -> Path:
        p = self.dir / f"{name}.xml"
        p.write_text(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
            f"{seclabel}<devices>{disks}</devices></domain>"
        )
        return p

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(["--config", str(self.conf), *argv])
        out, err = capsys.readouterr()
        return rc, out, err


def disk(
    path: Path, target: str, flags: str = "", device: str = "disk", bus: str | None = None
) -> str:
    bus = bus or ("ide" if device == "cdrom" else "virtio")
    return (
        f"<disk type='file' device='{device}'><driver name='qemu' type='raw'/>"
        f"<source file='{path}'/><target dev='{target}' bus='{bus}'/>{flags}</disk>"
    )


def owner(path: Path) -> str:
    st = os.stat(path)
    return f"+{st.st_uid}:+{st.st_gid}"


def getfacl(path: Path) -> str:
    return subprocess.run(
        ["getfacl", "-cpn", str(path)], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def env(capsys: pytest.CaptureFixture[str]) -> Iterator[Env]:
    root = Path(tempfile.mkdtemp(prefix="svirt-honest-", dir="/var/tmp"))
    root.chmod(0o755)
    e = Env(root)
    try:
        yield e
    finally:
        # Stop what a failed test left running (by the domains svirt recorded here).
        for rec in sorted((root / "state" / "domains").glob("*.xml")):
            main(["--config", str(e.conf), "stop", "--force", rec.stem])
        shutil.rmtree(root, ignore_errors=True)


def test_start_with_relabel_no_never_claims_the_image_label(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    img = env.image("a.img")
    xml = env.domain(
        "static",
        disk(img, "vda"),
        "<seclabel type='static' model='selinux' relabel='no'>"
        "<label>system_u:system_r:svirt_t:s0:c10,c20</label></seclabel>",
    )
    rc, out, _ = env.run(capsys, "start", str(xml))
    assert rc == 0
    lines = out.splitlines()
    # was: "  image label   system_u:object_r:svirt_image_t:s0:c10,c20", never applied
    assert "  image label   not applied (relabel='no')" in lines
    assert "svirt_image_t:s0:c10,c20" not in out
    assert host_selinux.getfilecon(img) == ORIG
    assert lines[lines.index(f"  disk vda  {img}") + 1 :][:2] == [
        "    selinux label not changed: relabel='no'",
        f"    dac     owner {QEMU} set (original +0:+0 remembered)",
    ]
    rc, out, _ = env.run(capsys, "stop", "--force", "static")
    assert rc == 0
    assert out.splitlines()[0] == (
        "Domain 'static' stopped (quit): 1 restored to the remembered original, "
        "1 not changed by rule"
    )
    assert "    selinux label not changed: relabel='no'" in out
    assert "    dac     owner restored to +0:+0 (the remembered original)" in out
    assert owner(img) == "+0:+0" and host_selinux.getfilecon(img) == ORIG


def test_stop_says_what_it_left_reset_and_put_back(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shareable and read-only media are left (libvirt's rule), a file remember_owner = 0
    could not remember is reset to the default, and an original whose xattrs were erased
    (what libvirt does to a file another domain uses) is put back from svirt's copy:
    each said as such, in text and in --json."""
    img, shared, iso, other = (
        env.image("a.img"),
        env.image("sh.img"),
        env.image("cd.iso"),
        env.image("b.img"),
    )
    xml = env.domain(
        "vm",
        disk(img, "vda")
        + disk(shared, "vdb", "<shareable/>")
        + disk(iso, "hdc", "<readonly/>", device="cdrom"),
    )
    assert env.run(capsys, "start", str(xml))[0] == 0
    os.removexattr(img, "trusted.libvirt.security.dac")  # libvirt's cleanup erasing it
    for name in rem.xattr_names("dac")[1:]:
        os.removexattr(img, name)
    rc, out, err = env.run(capsys, "stop", "--force", "--json", "vm")
    assert rc == 0
    data = json.loads(out)
    by = {(o["driver"], o["path"]): o for o in data["outcomes"]}
    assert by[("dac", str(img))]["reinstated"] == "+0:+0"
    assert by[("selinux", str(img))]["outcome"] == "restored"
    for path, kind in ((shared, "shareable"), (iso, "read-only")):
        for driver in ("selinux", "dac"):
            o = by[(driver, str(path))]
            assert o["outcome"] == "left" and o["why"] == f"{kind} medium: {NEVER}"
    assert by[("selinux", str(iso))]["value"] == CONTENT == host_selinux.getfilecon(iso)
    assert by[("dac", str(iso))]["value"] == QEMU == owner(iso)
    assert by[("selinux", str(shared))]["value"] == SHARED
    assert data["notes"] == [
        f"{path} is {kind}: like libvirt, svirt leaves the label {label} and owner "
        f"{QEMU} it gave this medium (other domains may use it, and libvirt never restores "
        "them); put them back by hand once no domain uses it"
        for path, kind, label in ((shared, "shareable", SHARED), (iso, "read-only", CONTENT))
    ]
    assert "warning: the remembered owner of" in err and "put back from that copy" in err
    assert owner(img) == "+0:+0" and host_selinux.getfilecon(img) == ORIG

    # remember_owner = 0: nothing is remembered, the owner goes to the default (root)
    env.configure("remember_owner = 0\n")
    os.chown(other, 1000, 1000)
    xml = env.domain("vm2", disk(other, "vda") + disk(iso, "hdc", "<readonly/>", "cdrom"))
    rc, out, _ = env.run(capsys, "start", str(xml))
    assert rc == 0
    assert (
        f"    dac     owner {QEMU} set (original +1000:+1000 not remembered: "
        "remember_owner = 0)" in out
    )
    rc, out, err = env.run(capsys, "stop", "--force", "vm2")
    assert rc == 0, err
    head, *lines = out.splitlines()
    # was: "Domain 'vm2' stopped (quit); every remembered label and owner restored"
    assert "restored" not in head
    assert head.startswith("Domain 'vm2' stopped (quit): 1 reset to the default")
    assert (
        "    dac     owner reset to the default +0:+0: nothing was remembered "
        "(remember_owner = 0)" in lines
    )
    assert f"    selinux label {CONTENT} left as it is: read-only medium: {NEVER}" in lines
    assert owner(other) == "+0:+0"  # what libvirt does too: the original is lost
    assert not any("restored" in ln for ln in lines[lines.index(f"  disk hdc  {iso}") :])


def test_hotplug_says_what_it_did(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img, iso = env.image("a.img"), env.image("cd.iso", mode=0o644)
    # SCSI: QEMU lets go of it without a guest OS (virtio's unplug asks the guest)
    assert env.run(capsys, "start", str(env.domain("hp", disk(img, "sda", bus="scsi"))))[0] == 0
    dxml = env.dir / "disk.xml"
    dxml.write_text(disk(iso, "sdb", "<readonly/>", bus="scsi"))
    rc, out, _ = env.run(capsys, "attach-disk", "hp", str(dxml))
    assert rc == 0
    assert out.splitlines()[:4] == [
        "Disk sdb attached to 'hp': 1 applied, 1 skipped (already usable)",
        f"  disk sdb  {iso}",
        f"    selinux label {CONTENT} set (original {ORIG} not remembered: libvirt's rule "
        "for this kind of resource)",
        f"    dac     skipped: {QEMU} can already read it; owner +0:+0 unchanged",
    ]
    rc, out, _ = env.run(capsys, "detach-disk", "hp", "sdb")
    assert rc == 0
    # was: "Disk sdb detached from 'hp'; its labels restored"
    assert out.splitlines() == [
        "Disk sdb detached from 'hp': 2 left as libvirt leaves them",
        f"  disk sdb  {iso}",
        f"    selinux label {CONTENT} left as it is: read-only medium: {NEVER}",
        f"    dac     owner not changed: read-only medium: {NEVER}",
    ]
    assert "restored" not in out
    assert host_selinux.getfilecon(iso) == CONTENT and owner(iso) == "+0:+0"
    assert env.run(capsys, "stop", "--force", "hp")[0] == 0


def test_dry_run_shows_skipped_chowns_and_acl_edits(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dry run is the real plan: the chown of a world-readable ISO is skipped, and
    in ACL mode each ACL entry (search on a 0700 directory included) and what the
    restore removes are listed; labelling then does exactly that."""
    priv = env.dir / "priv"
    priv.mkdir(mode=0o700)
    img = make_file(priv / "p.img", label=ORIG)
    iso = env.image("cd.iso", mode=0o644)
    xml = env.domain("acl", disk(img, "vda") + disk(iso, "hdc", "<readonly/>", "cdrom"))
    uid = resolve_uid("svirt-qemu")
    rc, out, _ = env.run(capsys, "label", "--dry-run", "--json", str(xml))
    assert rc == 0
    plan = {(p["driver"], p["path"]): p for p in json.loads(out)["plan"]}
    iso_dac = plan[("dac", str(iso))]
    # was: "+0:+0 -> +107:+107" although the chown never happens
    assert (iso_dac["would"], iso_dac["change"], iso_dac["on_restore"]) == (
        "usable",
        f"skipped: {QEMU} can already read it (owner +0:+0 unchanged)",
        "nothing to undo",
    )

    env.configure('dac_mode = "acl"\n')
    acl_before = {p: getfacl(p) for p in (priv, img, iso)}
    rc, out, _ = env.run(capsys, "label", "--dry-run", str(xml))
    assert rc == 0
    rows = [re.split(r"\s{2,}", ln) for ln in out.splitlines() if ln.startswith("disk ")]
    rows = [r for r in rows if r[2] == "dac"]
    assert ["  ".join(r[4:]) for r in rows] == [
        f"ACL entry u:{uid}:--x added (mask --x)  ACL entry u:{uid} removed (the ACL as before)",
        f"ACL entry u:{uid}:rw- added (mask rw-)  ACL entry u:{uid} removed (the ACL as before)",
        f"skipped: {QEMU} can already read it (owner +0:+0 unchanged)  nothing to undo",
    ]
    assert [r[1] for r in rows] == [str(priv), str(img), str(iso)]
    assert {p: getfacl(p) for p in acl_before} == acl_before  # nothing was changed

    # And labelling does what the plan said.
    rc, out, _ = env.run(capsys, "label", str(xml))
    assert rc == 0
    assert f"user:{uid}:--x" in getfacl(priv) and f"user:{uid}:rw-" in getfacl(img)
    assert getfacl(iso) == acl_before[iso]
    assert f"    dac     ACL entry u:{uid}:rw- added (owner unchanged)" in out
    rc, out, _ = env.run(capsys, "restore", str(xml))
    assert rc == 0
    assert f"    dac     ACL entry u:{uid} removed; the ACL is as before" in out
    assert {p: getfacl(p) for p in acl_before} == acl_before


def test_plain_stop_says_what_it_waits_for_and_what_it_did(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """A guest without an OS never powers down: stop says so as it waits, then each
    escalation; a QEMU that does not even answer QMP (stopped) gets SIGTERM, then
    SIGKILL, each said."""
    img = env.image("a.img")
    assert env.run(capsys, "start", str(env.domain("slow", disk(img, "vda"))))[0] == 0
    rc, out, err = env.run(capsys, "stop", "--timeout", "1", "slow")
    assert rc == 0
    assert err.splitlines()[-2:] == [
        "svirt: waiting up to 1 s for the guest of 'slow' to power down (ACPI power "
        "button); 'svirt stop --force slow' quits QEMU at once",
        "svirt: the guest did not power down within 1 s: asking QEMU to quit (QMP quit)",
    ]
    assert out.startswith("Domain 'slow' stopped (quit): "), out
    assert out.splitlines()[0].endswith(": 2 restored to the remembered original"), out

    rc, out, err = env.run(capsys, "start", str(env.domain("slow", disk(img, "vda"))))
    assert rc == 0, err
    rec = json.loads(env.run(capsys, "list", "--json")[1])
    pid = next(int(d["pid"]) for d in rec if d["name"] == "slow")
    os.kill(pid, signal.SIGSTOP)  # QEMU started here: it answers nothing now
    rc, out, err = env.run(capsys, "stop", "--force", "slow")
    assert rc == 0
    said = [ln for ln in err.splitlines() if ln.startswith("svirt: ")]
    assert said[0].startswith("svirt: QEMU's monitor socket does not answer")
    assert said[1:] == [
        f"svirt: QEMU (pid {pid}) is still running: sending SIGTERM",
        f"svirt: QEMU (pid {pid}) is still running 3 s after SIGTERM: sending SIGKILL",
    ]
    assert out.startswith("Domain 'slow' stopped (killed): 2 restored to the remembered")
    assert owner(img) == "+0:+0" and host_selinux.getfilecon(img) == ORIG


def test_stop_note_with_per_vm_identity_names_no_owner_to_put_back(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """With per-VM identities the read-only medium's owner is never changed (an ACL
    entry is granted, then removed): the note says so, and asks only for the label."""
    env.configure(identity="on")
    img, iso = env.image("a.img"), env.image("cd.iso")
    xml = env.domain("id", disk(img, "vda") + disk(iso, "hdc", "<readonly/>", "cdrom"))
    acl_before = getfacl(iso)
    assert env.run(capsys, "start", str(xml))[0] == 0
    assert owner(iso) == "+0:+0"
    rc, out, err = env.run(capsys, "stop", "--force", "id")
    assert rc == 0
    notes = [ln for ln in err.splitlines() if ln.startswith("note: ")]
    assert notes == [
        f"note: {iso} is read-only: like libvirt, svirt leaves the label {CONTENT} it gave "
        "this medium (other domains may use it, and libvirt never restores them); put it "
        "back by hand once no domain uses it; its owner was never changed (svirt's ACL "
        "entry is removed)"
    ]
    assert getfacl(iso) == acl_before and owner(iso) == "+0:+0"
    assert "ACL entries removed" in out.splitlines()[0]
