"""``svirt label`` / ``svirt restore`` / ``svirt ls -Z`` on real files (issue 3, item 7).

The CLI runs in-process (``main(argv)``) with an svirt.conf written to tmp_path that
names the SELinux driver and keeps the state under tmp_path. DAC stays on: this is the
configuration a user runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from svirt.cli.main import main
from svirt.host import selinux as host_selinux
from svirt.security import remember as rem

ORIG = "system_u:object_r:user_tmp_t:s0"
CONTENT = "system_u:object_r:virt_content_t:s0"


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.state = tmp_path / "state"
        self.conf = tmp_path / "svirt.conf"
        self.conf.write_text(
            f'security_driver = ["selinux"]\nstate_dir = "{self.state}"\nvm_identity = "off"\n'
        )

    def file(self, name: str, label: str = ORIG) -> Path:
        p = self.dir / name
        p.write_bytes(b"image\n")
        os.chmod(p, 0o600)
        host_selinux.setfilecon(p, label)
        return p

    def domain(
        self,
        name: str,
        disks: list[tuple[Path, str]],
        kernel: Path | None = None,
        live_level: str | None = None,
    ) -> Path:
        devs = "".join(
            f"<disk type='file' device='disk'><source file='{p}'/><target dev='vd{chr(97 + i)}'/>"
            f"{flags}</disk>"
            for i, (p, flags) in enumerate(disks)
        )
        os_xml = f"<os><type>hvm</type>{f'<kernel>{kernel}</kernel>' if kernel else ''}</os>"
        if live_level is None:
            sec, dom_id = "<seclabel type='dynamic' model='selinux'/>", ""
        else:
            sec = (
                "<seclabel type='dynamic' model='selinux' relabel='yes'>"
                f"<label>system_u:system_r:svirt_t:{live_level}</label>"
                f"<imagelabel>system_u:object_r:svirt_image_t:{live_level}</imagelabel>"
                "</seclabel>"
            )
            dom_id = " id='7'"
        xml = self.dir / f"{name}.xml"
        xml.write_text(
            f"<domain type='kvm'{dom_id}><name>{name}</name>{os_xml}{sec}"
            f"<devices>{devs}</devices></domain>"
        )
        return xml

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        rc = main([args[0], "--config", str(self.conf), *args[1:]])
        out, err = capsys.readouterr()
        return rc, out, err

    def reservations(self) -> list[tuple[str, str]]:
        conn = sqlite3.connect(self.state / "svirt.db")
        try:
            return conn.execute(
                "SELECT level, domain FROM mcs_reservations ORDER BY level"
            ).fetchall()
        finally:
            conn.close()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def whole_state(*paths: Path) -> list[tuple[int, int, int, dict[str, bytes]]]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(
            (st.st_uid, st.st_gid, st.st_mode, {n: os.getxattr(p, n) for n in os.listxattr(p)})
        )
    return out


def one_error_line(err: str) -> str:
    """The reported error: one ``error:`` line, the last one, and no traceback. (Log
    lines such as the once-per-process "nothing is enforced" warning may precede it.)"""
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def test_label_and_restore(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img, iso = env.file("a.img"), env.file("cd.iso")
    xml = env.domain("vm1", [(img, ""), (iso, "<readonly/>")])
    rc, out, _ = env.run(capsys, "label", str(xml))
    assert rc == 0
    label = host_selinux.getfilecon(img)
    assert label is not None and label.startswith("system_u:object_r:svirt_image_t:s0:c")
    level = label.split(":", 3)[3]
    # issue 14: the image label says where it was applied; each resource says what
    # happened to it (the read-only ISO's label is the content label, not the image's)
    lines = out.splitlines()
    assert lines[0] == (
        f"domain vm1 labelled: process system_u:system_r:svirt_t:{level}, "
        f"images {label} (applied to 1 file)"
    )
    assert f"    selinux label {label} set (original {ORIG} remembered)" in lines
    assert f"    selinux label {CONTENT} set (original {ORIG} not remembered: " in out
    assert host_selinux.getfilecon(iso) == CONTENT
    assert (env.state / "domains" / "vm1.xml").exists()
    assert env.reservations() == [(level, "vm1")]

    rc, out, _ = env.run(capsys, "restore", str(xml))
    assert rc == 0
    assert out.startswith("domain vm1: ") and "MCS level released" in out
    # issue 14: the read-only ISO is said to be left, never "restored"
    assert f"    selinux label {ORIG} restored to {ORIG}" not in out
    assert f"    selinux label restored to {ORIG} (the remembered original)" in out
    assert (
        f"    selinux label {CONTENT} left as it is: read-only medium: like libvirt, svirt "
        "never restores it (other domains may use it)" in out
    )
    assert host_selinux.getfilecon(img) == ORIG
    assert host_selinux.getfilecon(iso) == CONTENT  # read-only media are never restored
    assert [n for n in os.listxattr(img) if n.startswith(rem.XATTR_PREFIX)] == []
    assert os.stat(img).st_uid == 0
    assert not (env.state / "domains" / "vm1.xml").exists()
    assert env.reservations() == []


def test_label_json(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img = env.file("a.img")
    rc, out, _ = env.run(capsys, "label", "--json", str(env.domain("vm1", [(img, "")])))
    assert rc == 0
    data = json.loads(out)
    assert data["domain"] == "vm1"
    assert data["imagelabel"] == host_selinux.getfilecon(img)
    assert data["label"].split(":", 3)[3] == data["imagelabel"].split(":", 3)[3]


def test_dry_run_changes_nothing(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img, iso, kernel = env.file("a.img"), env.file("cd.iso"), env.file("vmlinuz")
    xml = env.domain("vm1", [(img, ""), (iso, "<readonly/>")], kernel=kernel)
    before = whole_state(img, iso, kernel)
    rc, out, _ = env.run(capsys, "label", "--dry-run", str(xml))
    assert rc == 0
    assert whole_state(img, iso, kernel) == before
    assert env.reservations() == []
    assert not (env.state / "domains" / "vm1.xml").exists()
    lines = out.splitlines()
    assert lines[0] == "dry run: domain vm1 would get"
    assert lines[-1] == "nothing was changed"
    header = next(ln for ln in lines if ln.startswith("RESOURCE"))
    # issue 14: what each operation would do now, and what the restore will do
    assert header.split() == ["RESOURCE", "PATH", "DRIVER", "CURRENT", "WOULD", "ON", "RESTORE"]
    rc, out, _ = env.run(capsys, "label", "--dry-run", "--json", str(xml))
    plan = {(p["driver"], p["path"]): p for p in json.loads(out)["plan"]}
    img_op = plan[("selinux", str(img))]
    assert (img_op["current"], img_op["remember"]) == (ORIG, True)
    assert img_op["change"].startswith("label system_u:object_r:svirt_image_t:s0:c")
    assert img_op["on_restore"] == "restored to the remembered original"
    iso_op = plan[("selinux", str(iso))]
    assert (iso_op["current"], iso_op["new"], iso_op["remember"]) == (ORIG, CONTENT, False)
    assert iso_op["on_restore"] == (
        "not restored: read-only medium: like libvirt, svirt never restores it "
        "(other domains may use it)"
    )
    assert plan[("selinux", str(kernel))]["on_restore"] == "restored to the remembered original"
    assert whole_state(img, iso, kernel) == before
    # And a real label afterwards still works (the dry run reserved nothing).
    assert env.run(capsys, "label", str(xml))[0] == 0


def test_dry_run_json_shows_what_is_remembered(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = env.file("vmlinuz")
    assert env.run(capsys, "label", str(env.domain("a", [], kernel=kernel)))[0] == 0
    before = whole_state(kernel)
    rc, out, _ = env.run(
        capsys, "label", "--dry-run", "--json", str(env.domain("b", [], kernel=kernel))
    )
    assert rc == 0
    assert whole_state(kernel) == before
    plan = json.loads(out)
    assert plan["domain"] == "b"
    (entry,) = [p for p in plan["plan"] if p["driver"] == "selinux"]
    assert entry == {
        "driver": "selinux",
        "resource": "kernel",
        "path": str(kernel),
        "current": CONTENT,
        "new": CONTENT,
        "remember": True,
        "remembered": ORIG,  # the original a's label run recorded
        "would": "done",
        "change": f"label {CONTENT} (already)",
        "on_restore": "restored to the remembered original",
    }
    sl = next(s for s in plan["seclabels"] if s["model"] == "selinux")
    assert sl["label"].startswith("system_u:system_r:svirt_t:s0:c")


def test_dry_run_of_live_xml_uses_its_labels(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img = env.file("a.img")
    xml = env.domain("live", [(img, "")], live_level="s0:c41,c264")
    rc, out, _ = env.run(capsys, "label", "--dry-run", "--json", str(xml))
    assert rc == 0
    plan = json.loads(out)
    (entry,) = [p for p in plan["plan"] if p["driver"] == "selinux"]
    assert entry["new"] == "system_u:object_r:svirt_image_t:s0:c41,c264"
    assert env.reservations() == []


def test_label_twice_is_one_error_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    xml = env.domain("vm1", [(env.file("a.img"), "")])
    assert env.run(capsys, "label", str(xml))[0] == 0
    rc, _, err = env.run(capsys, "label", str(xml))
    assert rc == 1
    assert "domain 'vm1' is already labelled" in one_error_line(err)


def test_in_use_is_one_error_line_and_changes_nothing(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    img, other = env.file("a.img"), env.file("b.img")
    assert env.run(capsys, "label", str(env.domain("a", [(img, "")])))[0] == 0
    before = whole_state(img, other)
    rc, _, err = env.run(capsys, "label", str(env.domain("b", [(other, ""), (img, "")])))
    assert rc == 1
    assert one_error_line(err) == (
        "error: Requested operation is not valid: Setting different SELinux label on "
        f"{img} which is already in use"
    )
    assert whole_state(img, other) == before
    assert [d for _, d in env.reservations()] == ["a"]


def test_restore_without_labels_is_one_error_line(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    xml = env.domain("vm1", [(env.file("a.img"), "")])
    rc, _, err = env.run(capsys, "restore", str(xml))
    assert rc == 1
    assert one_error_line(err) == (
        "error: Requested operation is not valid: domain 'vm1' has no labels to restore"
    )


def test_restore_of_a_live_xml_svirt_never_labelled_keeps_other_users(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    img = env.file("a.img")
    assert env.run(capsys, "label", str(env.domain("a", [(img, "")])))[0] == 0
    before = whole_state(img)
    stranger = env.domain("b", [(img, "")], live_level="s0:c3,c4")  # e.g. a copied dumpxml
    rc, _, _ = env.run(capsys, "restore", str(stranger))
    assert rc == 1
    assert whole_state(img) == before


def test_bad_xml_is_one_error_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    xml = env.dir / "bad.xml"
    xml.write_text("<domain type='kvm'><name>x</name>")
    rc, _, err = env.run(capsys, "label", str(xml))
    assert rc == 1
    assert one_error_line(err).startswith(f"error: {xml}: ")


def test_ls_z(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img, plain = env.file("a.img"), env.file("plain.img")
    assert env.run(capsys, "label", str(env.domain("vm1", [(img, "")])))[0] == 0
    label = host_selinux.getfilecon(img)
    st = os.stat(img)
    rc = main(["ls", "-Z", str(img), str(plain)])
    out, _ = capsys.readouterr()
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"{label} {st.st_uid}:{st.st_gid} 0600 {img}"
    assert lines[1] == f"    remembered selinux: {ORIG} refcount=1 (this boot)"
    assert lines[2] == "    remembered dac: +0:+0 refcount=1 (this boot)"
    assert lines[3] == f"{ORIG} 0:0 0600 {plain}"
    assert len(lines) == 4


def test_ls_z_marks_stale_state(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img = env.file("a.img")
    os.setxattr(img, "trusted.libvirt.security.selinux", b"system_u:object_r:old_t:s0")
    os.setxattr(img, "trusted.libvirt.security.ref_selinux", b"2")
    os.setxattr(img, "trusted.libvirt.security.timestamp_selinux", b"1600000000")
    assert main(["ls", "-Z", str(img)]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[1] == (
        "    remembered selinux: system_u:object_r:old_t:s0 refcount=2 "
        f"(STALE: timestamp 1600000000 is not this boot ({rem.boot_time()}))"
    )
    assert main(["ls", "-Z", "--json", str(img)]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["remembered"]["selinux"] == {
        "label": "system_u:object_r:old_t:s0",
        "refcount": "2",
        "timestamp": "1600000000",
        "stale": True,
    }
    assert "dac" not in entry["remembered"]
    # ls never repairs: the stale xattrs are still there.
    assert os.getxattr(img, "trusted.libvirt.security.ref_selinux") == b"2"


def test_ls_z_missing_path(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    img = env.file("a.img")
    rc = main(["ls", "-Z", str(env.dir / "nope"), str(img)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert (
        one_error_line(err)
        == f"error: {env.dir / 'nope'}: cannot access: No such file or directory"
    )
    assert out.strip().endswith(str(img))  # the other paths are still listed
