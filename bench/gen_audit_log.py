"""Generate realistic audit logs of any size: a busy virtualization host, raw or ENRICHED.

The record mix is what auditd writes on a libvirt host with a few watch rules:
file-watch and execve events (SYSCALL, CWD, PATH, EXECVE, PROCTITLE), PAM and sshd
sessions (USER_ACCT, CRED_ACQ, LOGIN + SYSCALL, USER_START, USER_END, ...), systemd
services, libvirt's VIRT_CONTROL / VIRT_MACHINE_ID / VIRT_RESOURCE, USER_AVC from systemd
and D-Bus, audit rule changes, BPF and netfilter events, and SELinux AVC denials from
several QEMU guests (sVirt: each guest ``svirt_t`` with its own category pair) of the
kinds seen in the field: an image left ``virt_image_t`` (the seed's ``relabel='no'``
case), another guest's image (MCS), an NFS image (``virt_use_nfs``), a home-directory
image, permissive domains, and vCPU threads whose comm is hex-encoded (``CPU 0/KVM``).
An event's records are interleaved with other events the way concurrent CPUs interleave
them (the AVC first, the SYSCALL and PROCTITLE a few records later).

Deterministic for a given ``--seed``. ``--live-xml DIR`` writes each guest's libvirt
status XML (``<domstatus>``), as ``/run/libvirt/qemu/NAME.xml`` holds it, so
``svirt audit explain`` can name the guests.

    .venv/bin/python bench/gen_audit_log.py --size 100M -o /tmp/audit.log
    .venv/bin/python bench/gen_audit_log.py --events 500 --enriched --live-xml /tmp/run
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = ["VM", "GenSummary", "generate", "make_vms", "parse_size", "status_xml"]

START = 1763000000.0  # Nov 2025
GS = "\x1d"
UNSET = 4294967295
USERS = {0: "root", 81: "dbus", 107: "qemu", 1000: "alice", 1001: "bob", UNSET: "unset"}
VM_NAMES = [
    "web-01",
    "db-01",
    "ci-runner-3",
    "ol810",
    "mail-02",
    "build-7",
    "win11-lab",
    "k8s-node-4",
    "cache-1",
    "vpn-gw",
]
QEMU_EXES = ["/usr/libexec/qemu-kvm", "/usr/bin/qemu-system-x86_64"]
SYSCALLS = {"openat": 257, "read": 0, "write": 1, "execve": 59, "ioctl": 16, "bpf": 321}
SYSCALLS.update({"setsockopt": 54, "connect": 42, "unlink": 87, "rename": 82, "mmap": 9})


@dataclass
class VM:
    """One guest: its name, QEMU pid, category pair and disk."""

    name: str
    uuid: str
    pid: int
    cats: tuple[int, int]
    exe: str
    image: str
    scenario: str  # unlabelled | other-vm | nfs | home | permissive | ok

    @property
    def level(self) -> str:
        return f"s0:c{self.cats[0]},c{self.cats[1]}"

    @property
    def label(self) -> str:
        return f"system_u:system_r:svirt_t:{self.level}"

    @property
    def imagelabel(self) -> str:
        return f"system_u:object_r:svirt_image_t:{self.level}"

    @property
    def comm(self) -> str:
        return "qemu-kvm" if self.exe.endswith("qemu-kvm") else "qemu-system-x86"

    def argv(self) -> list[str]:
        return [
            self.exe,
            "-name",
            f"guest={self.name},debug-threads=on",
            "-S",
            "-object",
            '{"qom-type":"secret","id":"masterKey0","format":"raw",'
            f'"file":"/var/lib/libvirt/qemu/domain-1-{self.name}/master-key.aes"}}',
        ]


SCENARIOS = ["unlabelled", "other-vm", "nfs", "home", "permissive", "ok"]


def make_vms(n: int = 4, seed: int = 1) -> list[VM]:
    rng = random.Random(seed * 7919)
    used: set[tuple[int, int]] = set()
    vms: list[VM] = []
    for i in range(n):
        while True:
            a, b = sorted(rng.sample(range(1024), 2))
            if (a, b) not in used:
                used.add((a, b))
                break
        name = VM_NAMES[i] if i < len(VM_NAMES) else f"vm-{i:03d}"
        vms.append(
            VM(
                name=name,
                uuid=str(uuidlib.UUID(int=rng.getrandbits(128), version=4)),
                pid=300000 + rng.randrange(200000),
                cats=(a, b),
                exe=QEMU_EXES[i % 2],
                image=f"/var/lib/libvirt/images/{name}.qcow2",
                scenario=SCENARIOS[i % len(SCENARIOS)],
            )
        )
    return vms


def status_xml(vm: VM) -> str:
    """libvirt's status XML for a running guest (what /run/libvirt/qemu/NAME.xml holds)."""
    return f"""<domstatus state='running' reason='booted' pid='{vm.pid}'>
  <domain type='kvm' id='1'>
    <name>{vm.name}</name>
    <uuid>{vm.uuid}</uuid>
    <memory unit='KiB'>2097152</memory>
    <vcpu placement='static'>2</vcpu>
    <os>
      <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    </os>
    <devices>
      <emulator>{vm.exe}</emulator>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='{vm.image}'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
    <seclabel type='dynamic' model='selinux' relabel='yes'>
      <label>{vm.label}</label>
      <imagelabel>{vm.imagelabel}</imagelabel>
    </seclabel>
  </domain>
</domstatus>
"""


@dataclass
class GenSummary:
    bytes: int = 0
    lines: int = 0
    events: int = 0
    qemu_denials: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _hex(text: str) -> str:
    return text.encode().hex().upper()


def _enc(text: str) -> str:
    """Kernel encoding of an untrusted string: quoted, or hex when it needs escaping."""
    if any(c in text for c in ' "\\') or any(ord(c) < 0x21 or ord(c) > 0x7E for c in text):
        return _hex(text)
    return f'"{text}"'


class _Writer:
    def __init__(
        self, out: BinaryIO, enriched: bool, rng: random.Random, start: float, rate: float
    ):
        self.out = out
        self.enriched = enriched
        self.rng = rng
        self.now = start
        self.step = 1.0 / rate
        self.serial = rng.randrange(1000, 90000)
        self.summary = GenSummary()
        self.deferred: list[tuple[int, list[str]]] = []  # (events to wait, lines)
        self.buf: list[str] = []

    def stamp(self) -> str:
        self.now += self.rng.expovariate(1.0) * self.step
        self.serial += 1
        ms = int((self.now % 1) * 1000)
        return f"{int(self.now)}.{ms:03d}:{self.serial}"

    def rec(self, type_: str, stamp: str, body: str, interp: str = "") -> str:
        self.summary.by_type[type_] = self.summary.by_type.get(type_, 0) + 1
        line = f"type={type_} msg=audit({stamp}): {body}"
        if self.enriched and interp:
            line += GS + interp
        return line

    def emit(self, lines: list[str]) -> None:
        self.buf.extend(lines)

    def end_event(self) -> None:
        self.summary.events += 1
        still: list[tuple[int, list[str]]] = []
        for wait, lines in self.deferred:
            if wait <= 0:
                self.buf.extend(lines)
            else:
                still.append((wait - 1, lines))
        self.deferred = still
        if len(self.buf) >= 2048:
            self.flush()

    def flush(self) -> None:
        for _wait, lines in self.deferred:
            self.buf.extend(lines)
        self.deferred = []
        if self.buf:
            data = ("\n".join(self.buf) + "\n").encode()
            self.out.write(data)
            self.summary.bytes += len(data)
            self.summary.lines += len(self.buf)
            self.buf = []

    def flush_lines(self) -> None:
        if self.buf:
            data = ("\n".join(self.buf) + "\n").encode()
            self.out.write(data)
            self.summary.bytes += len(data)
            self.summary.lines += len(self.buf)
            self.buf = []


def _ids(uid: int, gid: int, auid: int) -> tuple[str, str]:
    raw = (
        f"auid={auid} uid={uid} gid={gid} euid={uid} suid={uid} fsuid={uid} "
        f"egid={gid} sgid={gid} fsgid={gid}"
    )
    u, g, a = USERS.get(uid, str(uid)), USERS.get(gid, str(gid)), USERS.get(auid, str(auid))
    interp = (
        f'AUID="{a}" UID="{u}" GID="{g}" EUID="{u}" SUID="{u}" FSUID="{u}" '
        f'EGID="{g}" SGID="{g}" FSGID="{g}"'
    )
    return raw, interp


def _syscall(
    w: _Writer,
    stamp: str,
    name: str,
    *,
    success: bool,
    exit_: int,
    a: tuple[str, str, str, str],
    items: int,
    ppid: int,
    pid: int,
    uid: int,
    gid: int,
    auid: int,
    tty: str,
    ses: int | str,
    comm: str,
    exe: str,
    subj: str,
    key: str | None,
) -> str:
    ids, interp = _ids(uid, gid, auid)
    keyf = "(null)" if key is None else _enc(key)
    body = (
        f"arch=c000003e syscall={SYSCALLS[name]} success={'yes' if success else 'no'} "
        f"exit={exit_} a0={a[0]} a1={a[1]} a2={a[2]} a3={a[3]} items={items} ppid={ppid} "
        f"pid={pid} {ids} tty={tty} ses={ses} comm={_enc(comm)} exe={_enc(exe)} "
        f"subj={subj} key={keyf}"
    )
    return w.rec("SYSCALL", stamp, body, f"ARCH=x86_64 SYSCALL={name} {interp}")


def _path(
    w: _Writer,
    stamp: str,
    item: int,
    name: str,
    obj: str,
    inode: int,
    mode: str = "0100644",
    uid: int = 0,
) -> str:
    u = USERS.get(uid, str(uid))
    body = (
        f"item={item} name={_enc(name)} inode={inode} dev=fd:00 mode={mode} ouid={uid} "
        f"ogid={uid} rdev=00:00 obj={obj} nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 "
        "cap_fver=0 cap_frootid=0"
    )
    return w.rec("PATH", stamp, body, f'OUID="{u}" OGID="{u}"')


def _proctitle(w: _Writer, stamp: str, argv: list[str]) -> str:
    raw = "\0".join(argv).encode()[:128]
    if len(argv) == 1 and not any(c in argv[0] for c in ' "'):
        return w.rec("PROCTITLE", stamp, f"proctitle={_enc(argv[0])}")
    return w.rec("PROCTITLE", stamp, f"proctitle={raw.hex().upper()}")


UNCONFINED = "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"
WATCHED = [
    ("/etc/passwd", "system_u:object_r:passwd_file_t:s0", "identity"),
    ("/etc/shadow", "system_u:object_r:shadow_t:s0", "identity"),
    ("/etc/libvirt/qemu.conf", "system_u:object_r:virt_etc_t:s0", "virt-config"),
    ("/etc/svirt/svirt.conf", "system_u:object_r:etc_t:s0", "virt-config"),
    ("/var/lib/libvirt/images/base.qcow2", "system_u:object_r:virt_image_t:s0", "svirt-images"),
    ("/etc/sudoers", "system_u:object_r:etc_t:s0", None),
]
TOOLS = [
    ("cat", "/usr/bin/cat"),
    ("vim", "/usr/bin/vim.basic"),
    ("python3", "/usr/bin/python3.11"),
    ("libvirtd", "/usr/sbin/libvirtd"),
    ("sed", "/usr/bin/sed"),
    ("bash", "/usr/bin/bash"),
]


def ev_watch(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    name, obj, key = rng.choice(WATCHED)
    comm, exe = rng.choice(TOOLS)
    pid = rng.randrange(2000, 60000)
    uid = rng.choice([0, 0, 1000])
    ok = rng.random() < 0.9
    lines = [
        _syscall(
            w,
            st,
            "openat",
            success=ok,
            exit_=3 if ok else -13,
            a=("ffffff9c", f"{rng.getrandbits(44):x}", "0", "0"),
            items=1,
            ppid=rng.randrange(1, 2000),
            pid=pid,
            uid=uid,
            gid=uid,
            auid=rng.choice([1000, UNSET]),
            tty=rng.choice(["pts0", "(none)"]),
            ses=rng.choice([3, UNSET]),
            comm=comm,
            exe=exe,
            subj=UNCONFINED,
            key=key,
        ),
        w.rec(
            "CWD", st, f"cwd={_enc(rng.choice(['/root', '/home/alice', '/', '/var/lib/libvirt']))}"
        ),
        _path(w, st, 0, name, obj, rng.randrange(1000, 900000)),
        _proctitle(w, st, [comm, name]),
    ]
    w.emit(lines)


def ev_execve(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    comm, exe = rng.choice(TOOLS)
    args = [comm, rng.choice(["-l", "--version", "/tmp/x y", "list"])]
    pid = rng.randrange(2000, 60000)
    execve = "argc=2 " + " ".join(f"a{i}={_enc(a)}" for i, a in enumerate(args))
    w.emit(
        [
            _syscall(
                w,
                st,
                "execve",
                success=True,
                exit_=0,
                a=(
                    f"{rng.getrandbits(40):x}",
                    f"{rng.getrandbits(40):x}",
                    f"{rng.getrandbits(40):x}",
                    "0",
                ),
                items=2,
                ppid=rng.randrange(1, 2000),
                pid=pid,
                uid=0,
                gid=0,
                auid=rng.choice([1000, UNSET]),
                tty="pts0",
                ses=3,
                comm=comm,
                exe=exe,
                subj=UNCONFINED,
                key="exec",
            ),
            w.rec("EXECVE", st, execve),
            w.rec("CWD", st, 'cwd="/root"'),
            _path(
                w, st, 0, exe, "system_u:object_r:bin_t:s0", rng.randrange(1000, 90000), "0100755"
            ),
            _path(
                w,
                st,
                1,
                "/lib64/ld-linux-x86-64.so.2",
                "system_u:object_r:ld_so_t:s0",
                1234,
                "0100755",
            ),
            _proctitle(w, st, args),
        ]
    )


def _user_msg(
    w: _Writer, type_: str, pid: int, uid: int, auid: int, ses: int, subj: str, msg: str
) -> str:
    u, a = USERS.get(uid, str(uid)), USERS.get(auid, str(auid))
    return w.rec(
        type_,
        w.stamp(),
        f"pid={pid} uid={uid} auid={auid} ses={ses} subj={subj} msg='{msg}'",
        f'UID="{u}" AUID="{a}"',
    )


def ev_session(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    pid = rng.randrange(2000, 60000)
    who, exe, term, subj = rng.choice(
        [
            ("alice", "/usr/sbin/sshd", "ssh", "system_u:system_r:sshd_t:s0-s0:c0.c1023"),
            ("root", "/usr/sbin/cron", "cron", "system_u:system_r:crond_t:s0-s0:c0.c1023"),
            ("bob", "/usr/bin/sudo", "/dev/pts/1", UNCONFINED),
        ]
    )
    ok = rng.random() < 0.93
    res = "success" if ok else "failed"
    host = "192.0.2.10" if term == "ssh" else "?"
    tail = f'acct="{who}" exe="{exe}" hostname={host} addr={host} terminal={term} res={res}'
    auid = 1000 if who != "root" else 0
    lines = [
        _user_msg(
            w,
            "USER_AUTH",
            pid,
            0,
            UNSET,
            UNSET,
            subj,
            f"op=PAM:authentication grantors=pam_unix {tail}",
        ),
        _user_msg(
            w,
            "USER_ACCT",
            pid,
            0,
            UNSET,
            UNSET,
            subj,
            f"op=PAM:accounting grantors=pam_unix {tail}",
        ),
    ]
    w.emit(lines)
    if not ok:
        return
    w.emit(
        [
            _user_msg(
                w,
                "CRED_ACQ",
                pid,
                0,
                UNSET,
                UNSET,
                subj,
                f"op=PAM:setcred grantors=pam_unix {tail}",
            )
        ]
    )
    st = w.stamp()
    ses = rng.randrange(1, 400)
    login = w.rec(
        "LOGIN",
        st,
        f"pid={pid} uid=0 subj={subj} old-auid={UNSET} auid={auid} tty=(none) old-ses={UNSET} "
        f"ses={ses} res=1",
        f'UID="root" OLD-AUID="unset" AUID="{USERS.get(auid, auid)}"',
    )
    sys_ = _syscall(
        w,
        st,
        "write",
        success=True,
        exit_=4,
        a=("3", f"{rng.getrandbits(44):x}", "4", "0"),
        items=0,
        ppid=rng.randrange(1, 2000),
        pid=pid,
        uid=0,
        gid=0,
        auid=auid,
        tty="(none)",
        ses=ses,
        comm=exe.rsplit("/", 1)[1],
        exe=exe,
        subj=subj,
        key=None,
    )
    w.emit([login, sys_, _proctitle(w, st, [exe.rsplit("/", 1)[1] + ": " + who + " [priv]"])])
    w.emit(
        [
            _user_msg(
                w,
                "USER_START",
                pid,
                0,
                auid,
                ses,
                subj,
                f"op=PAM:session_open grantors=pam_unix {tail}",
            ),
            _user_msg(
                w,
                "USER_END",
                pid,
                0,
                auid,
                ses,
                subj,
                f"op=PAM:session_close grantors=pam_unix {tail}",
            ),
            _user_msg(
                w, "CRED_DISP", pid, 0, auid, ses, subj, f"op=PAM:setcred grantors=pam_unix {tail}"
            ),
        ]
    )


def ev_service(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    unit = rng.choice(
        ["libvirtd", "virtlogd", "systemd-tmpfiles-clean", "apt-daily", "svirt-monitor@web-01"]
    )
    kind = rng.choice(["SERVICE_START", "SERVICE_STOP"])
    res = "success" if rng.random() < 0.95 else "failed"
    w.emit(
        [
            _user_msg(
                w,
                kind,
                1,
                0,
                UNSET,
                UNSET,
                "system_u:system_r:init_t:s0",
                f'unit={unit} comm="systemd" exe="/usr/lib/systemd/systemd" hostname=? addr=? '
                f"terminal=? res={res}",
            )
        ]
    )


def ev_user_avc(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    if rng.random() < 0.5:
        msg = (
            'avc:  denied  { status } for auid=n/a uid=0 gid=0 cmdline="" '
            "scontext=system_u:system_r:virtd_t:s0-s0:c0.c1023 "
            "tcontext=system_u:system_r:init_t:s0 "
            'tclass=system exe="/usr/lib/systemd/systemd" sauid=0 hostname=? addr=? terminal=?'
        )
        w.emit([_user_msg(w, "USER_AVC", 1, 0, UNSET, UNSET, "system_u:system_r:init_t:s0", msg)])
    else:
        msg = (
            "avc:  denied  { send_msg } for msgtype=method_call "
            "interface=org.freedesktop.login1.Manager "
            f"member=Inhibit dest=org.freedesktop.login1 spid={rng.randrange(2000, 60000)} "
            "tpid=612 "
            "scontext=system_u:system_r:virtd_t:s0-s0:c0.c1023 "
            "tcontext=system_u:system_r:systemd_logind_t:s0 "
            'tclass=dbus permissive=0 exe="/usr/bin/dbus-daemon" sauid=81 hostname=? addr=? '
            "terminal=?"
        )
        w.emit(
            [
                _user_msg(
                    w,
                    "USER_AVC",
                    611,
                    81,
                    UNSET,
                    UNSET,
                    "system_u:system_r:system_dbusd_t:s0-s0:c0.c1023",
                    msg,
                )
            ]
        )


def ev_virt(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    vm = rng.choice(vms)
    subj = "system_u:system_r:virtd_t:s0-s0:c0.c1023"
    tail = 'exe="/usr/sbin/libvirtd" hostname=? addr=? terminal=? res=success'
    base = f'virt=kvm vm="{vm.name}" uuid={vm.uuid}'
    w.emit(
        [
            _user_msg(
                w,
                "VIRT_MACHINE_ID",
                1400,
                0,
                UNSET,
                UNSET,
                subj,
                f"{base} vm-ctx={vm.label} img-ctx={vm.imagelabel} model=selinux {tail}",
            ),
            _user_msg(
                w,
                "VIRT_RESOURCE",
                1400,
                0,
                UNSET,
                UNSET,
                subj,
                f'virt=kvm resrc=disk reason=start vm="{vm.name}" uuid={vm.uuid} old-disk="?" '
                f'new-disk="{vm.image}" {tail}',
            ),
            _user_msg(
                w,
                "VIRT_CONTROL",
                1400,
                0,
                UNSET,
                UNSET,
                subj,
                f'virt=kvm op=start reason=booted vm="{vm.name}" uuid={vm.uuid} vm-pid={vm.pid} '
                f"{tail}",
            ),
        ]
    )


def _qemu_target(
    vm: VM, vms: list[VM], rng: random.Random
) -> tuple[str, str, str, tuple[str, ...]]:
    """(tcontext, file name, path, perms) of this guest's typical denial."""
    s = vm.scenario
    if s == "unlabelled":
        return "system_u:object_r:virt_image_t:s0", f"{vm.name}.qcow2", vm.image, ("write",)
    if s == "other-vm":
        other = next((o for o in vms if o is not vm), vm)
        return other.imagelabel, f"{other.name}.qcow2", other.image, ("read", "write")
    if s == "nfs":
        return "system_u:object_r:nfs_t:s0", f"{vm.name}.img", f"/mnt/nfs/{vm.name}.img", ("read",)
    if s == "home":
        return (
            "unconfined_u:object_r:user_home_t:s0",
            "disk.qcow2",
            "/home/alice/disk.qcow2",
            ("read", "write", "open"),
        )
    if s == "permissive":
        return (
            "system_u:object_r:virt_image_t:s0",
            f"{vm.name}-data.raw",
            f"/var/lib/libvirt/images/{vm.name}-data.raw",
            ("open",),
        )
    return "system_u:object_r:usb_device_t:s0", "001", "/dev/bus/usb/001/001", ("read", "write")


def ev_qemu_avc(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    vm = rng.choice(vms)
    st = w.stamp()
    tcon, name, path, perms = _qemu_target(vm, vms, rng)
    permissive = vm.scenario == "permissive"
    comm = vm.comm if rng.random() < 0.8 else rng.choice(["CPU 0/KVM", "IO mon_iothread", "worker"])
    tclass = "chr_file" if path.startswith("/dev/") else "file"
    ino = rng.randrange(10000, 200000000)
    avcs = [
        w.rec(
            "AVC",
            st,
            f"avc:  denied  {{ {p} }} for  pid={vm.pid} comm={_enc(comm)} name={_enc(name)} "
            'dev="dm-0" '
            f"ino={ino} scontext={vm.label} tcontext={tcon} tclass={tclass} "
            f"permissive={int(permissive)}",
        )
        for p in (perms if permissive else (" ".join(perms),))
    ]
    w.summary.qemu_denials += 1
    items = 1 if rng.random() < 0.5 else 0
    rest = [
        _syscall(
            w,
            st,
            "openat",
            success=permissive,
            exit_=7 if permissive else -13,
            a=("ffffff9c", f"{rng.getrandbits(44):x}", "80002", "0"),
            items=items,
            ppid=1,
            pid=vm.pid,
            uid=107,
            gid=107,
            auid=UNSET,
            tty="(none)",
            ses=UNSET,
            comm=comm,
            exe=vm.exe,
            subj=vm.label,
            key=None,
        )
    ]
    if items:
        rest.append(w.rec("CWD", st, 'cwd="/"'))
        rest.append(_path(w, st, 0, path, tcon, ino, uid=107))
    rest.append(_proctitle(w, st, vm.argv()))
    w.emit(avcs)
    w.deferred.append((rng.choice([0, 0, 1, 2]), rest))


def ev_other_avc(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    pid = rng.randrange(2000, 60000)
    src, comm, exe, tcon, name, tclass, perm = rng.choice(
        [
            (
                "system_u:system_r:httpd_t:s0",
                "httpd",
                "/usr/sbin/httpd",
                "unconfined_u:object_r:user_home_t:s0",
                "index.html",
                "file",
                "read",
            ),
            (
                "system_u:system_r:virtd_t:s0-s0:c0.c1023",
                "rpc-virtqemud",
                "/usr/sbin/libvirtd",
                "system_u:object_r:default_t:s0",
                "pool",
                "dir",
                "search",
            ),
            (
                "system_u:system_r:logrotate_t:s0",
                "logrotate",
                "/usr/sbin/logrotate",
                "system_u:object_r:virt_log_t:s0",
                "web-01.log",
                "file",
                "unlink",
            ),
        ]
    )
    avc = w.rec(
        "AVC",
        st,
        f'avc:  denied  {{ {perm} }} for  pid={pid} comm={_enc(comm)} name={_enc(name)} dev="dm-0" '
        f"ino={rng.randrange(10000, 900000)} scontext={src} tcontext={tcon} tclass={tclass} "
        "permissive=0",
    )
    sys_ = _syscall(
        w,
        st,
        "openat",
        success=False,
        exit_=-13,
        a=("ffffff9c", f"{rng.getrandbits(44):x}", "0", "0"),
        items=0,
        ppid=1,
        pid=pid,
        uid=0,
        gid=0,
        auid=UNSET,
        tty="(none)",
        ses=UNSET,
        comm=comm,
        exe=exe,
        subj=src,
        key=None,
    )
    w.emit([avc, sys_, _proctitle(w, st, [exe])])


def ev_config(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    key = rng.choice(["svirt-images", "identity", "exec", None])
    keyf = "(null)" if key is None else f'"{key}"'
    w.emit(
        [
            w.rec(
                "CONFIG_CHANGE",
                st,
                f"auid=1000 ses=3 subj={UNCONFINED} op=add_rule key={keyf} list=4 res=1",
                'AUID="alice"',
            ),
            _syscall(
                w,
                st,
                "write",
                success=True,
                exit_=1072,
                a=("4", f"{rng.getrandbits(44):x}", "430", "0"),
                items=0,
                ppid=2000,
                pid=rng.randrange(2000, 60000),
                uid=0,
                gid=0,
                auid=1000,
                tty="pts0",
                ses=3,
                comm="auditctl",
                exe="/usr/sbin/auditctl",
                subj=UNCONFINED,
                key=None,
            ),
            _proctitle(w, st, ["auditctl", "-R", "/etc/audit/audit.rules"]),
        ]
    )


def ev_bpf(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    w.emit(
        [
            w.rec(
                "BPF", st, f"prog-id={rng.randrange(10, 900)} op={rng.choice(['LOAD', 'UNLOAD'])}"
            ),
            _syscall(
                w,
                st,
                "bpf",
                success=True,
                exit_=12,
                a=("5", f"{rng.getrandbits(44):x}", "90", "0"),
                items=0,
                ppid=1,
                pid=1,
                uid=0,
                gid=0,
                auid=UNSET,
                tty="(none)",
                ses=UNSET,
                comm="systemd",
                exe="/usr/lib/systemd/systemd",
                subj="system_u:system_r:init_t:s0",
                key=None,
            ),
            _proctitle(w, st, ["/sbin/init"]),
        ]
    )


def ev_netfilter(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    pid = rng.randrange(2000, 60000)
    subj = "system_u:system_r:virtd_t:s0-s0:c0.c1023"
    w.emit(
        [
            w.rec(
                "NETFILTER_CFG",
                st,
                f"table=filter:2 family=2 entries={rng.randrange(4, 80)} op=xt_replace pid={pid} "
                f'subj={subj} comm="iptables-restor"',
            ),
            _syscall(
                w,
                st,
                "setsockopt",
                success=True,
                exit_=0,
                a=("4", "0", "40", f"{rng.getrandbits(44):x}"),
                items=0,
                ppid=1400,
                pid=pid,
                uid=0,
                gid=0,
                auid=UNSET,
                tty="(none)",
                ses=UNSET,
                comm="iptables-restor",
                exe="/usr/sbin/xtables-legacy-multi",
                subj=subj,
                key=None,
            ),
            _proctitle(w, st, ["/usr/sbin/iptables-restore", "-w", "--noflush"]),
        ]
    )


def ev_promisc(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    w.emit(
        [
            w.rec(
                "ANOM_PROMISCUOUS",
                st,
                f"dev=vnet{rng.randrange(0, 9)} prom=256 old_prom=0 auid={UNSET} uid=0 gid=0 "
                f"ses={UNSET}",
                'AUID="unset" UID="root" GID="root"',
            ),
            _syscall(
                w,
                st,
                "ioctl",
                success=True,
                exit_=0,
                a=("1c", "89a2", f"{rng.getrandbits(44):x}", "0"),
                items=0,
                ppid=1,
                pid=1400,
                uid=0,
                gid=0,
                auid=UNSET,
                tty="(none)",
                ses=UNSET,
                comm="rpc-libvirtd",
                exe="/usr/sbin/libvirtd",
                subj="system_u:system_r:virtd_t:s0-s0:c0.c1023",
                key=None,
            ),
            _proctitle(w, st, ["/usr/sbin/libvirtd", "--timeout", "120"]),
        ]
    )


def ev_seccomp(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    vm = rng.choice(vms)
    w.emit(
        [
            w.rec(
                "SECCOMP",
                w.stamp(),
                f"auid={UNSET} uid=107 gid=107 ses={UNSET} subj={vm.label} pid={vm.pid} "
                f"comm={_enc(vm.comm)} "
                f"exe={_enc(vm.exe)} sig=0 arch=c000003e syscall=165 compat=0 "
                f"ip=0x7f{rng.getrandbits(36):x} code=0x50000",
                'AUID="unset" UID="qemu" GID="qemu" ARCH=x86_64 SYSCALL=mount',
            )
        ]
    )


def ev_mac_status(w: _Writer, vms: list[VM]) -> None:
    rng = w.rng
    st = w.stamp()
    w.emit(
        [
            w.rec(
                "MAC_STATUS",
                st,
                "enforcing=1 old_enforcing=0 auid=1000 ses=3 enabled=1 old-enabled=1 lsm=selinux "
                "res=1",
                'AUID="alice"',
            ),
            _syscall(
                w,
                st,
                "write",
                success=True,
                exit_=1,
                a=("3", f"{rng.getrandbits(44):x}", "1", "0"),
                items=0,
                ppid=2000,
                pid=rng.randrange(2000, 60000),
                uid=0,
                gid=0,
                auid=1000,
                tty="pts0",
                ses=3,
                comm="setenforce",
                exe="/usr/sbin/setenforce",
                subj=UNCONFINED,
                key=None,
            ),
            _proctitle(w, st, ["setenforce", "1"]),
        ]
    )


def ev_daemon(w: _Writer, vms: list[VM]) -> None:
    w.emit(
        [
            w.rec(
                "DAEMON_START",
                w.stamp(),
                f"op=start ver=3.0.9 format={'enriched' if w.enriched else 'raw'} "
                "kernel=6.1.0-13-amd64 "
                f"auid={UNSET} pid=612 uid=0 ses={UNSET} subj=system_u:system_r:auditd_t:s0 "
                "res=success",
                'AUID="unset" UID="root"',
            )
        ]
    )


MIX: list[tuple[float, Callable[[_Writer, list[VM]], None]]] = [
    (30, ev_watch),
    (14, ev_execve),
    (6, ev_session),
    (10, ev_service),
    (4, ev_user_avc),
    (2, ev_virt),
    (3, ev_qemu_avc),
    (1, ev_other_avc),
    (2, ev_config),
    (5, ev_bpf),
    (4, ev_netfilter),
    (1, ev_promisc),
    (1, ev_seccomp),
    (0.3, ev_mac_status),
    (0.05, ev_daemon),
]


def generate(
    out: BinaryIO,
    *,
    size: int | None = None,
    events: int | None = None,
    enriched: bool = False,
    vms: int | list[VM] = 4,
    seed: int = 1,
    start: float = START,
    rate: float = 200.0,
    junk: int = 0,
    qemu_weight: float | None = None,
) -> GenSummary:
    """Write a log of about ``size`` bytes or ``events`` events. ``junk`` lines that are
    not records are spread through it (for the malformed-line paths)."""
    if size is None and events is None:
        raise ValueError("give size or events")
    rng = random.Random(seed)
    guests = make_vms(vms, seed) if isinstance(vms, int) else vms
    w = _Writer(out, enriched, rng, start, rate)
    mix = list(MIX)
    if qemu_weight is not None:
        mix = [(qemu_weight if fn is ev_qemu_avc else wt, fn) for wt, fn in mix]
    weights = [wt for wt, _ in mix]
    fns = [fn for _, fn in mix]
    ev_daemon(w, guests)
    w.end_event()
    junk_every = 0
    if junk:
        approx = events if events is not None else max(1, (size or 0) // 700)
        junk_every = max(1, approx // junk)
    n = 1
    while True:
        if events is not None and n >= events:
            break
        if size is not None and w.summary.bytes >= size:
            break
        rng.choices(fns, weights)[0](w, guests)
        w.end_event()
        n += 1
        if junk_every and n % junk_every == 0:
            w.buf.append(
                rng.choice(["-- garbage line --", "type=AVC", "\x00\x01binary", "msg=audit(oops"])
            )
    w.flush()
    return w.summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    p.add_argument("--size", help="approximate size: 100M, 1G, 500K or bytes")
    p.add_argument("--events", type=int, help="number of events instead of a size")
    p.add_argument("--enriched", action="store_true", help="auditd's ENRICHED format (0x1D)")
    p.add_argument("--vms", type=int, default=4, help="number of QEMU guests (default 4)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=float, default=START, help="epoch of the first event")
    p.add_argument("--rate", type=float, default=200.0, help="events per second")
    p.add_argument("--junk", type=int, default=0, help="number of non-record lines to mix in")
    p.add_argument("--live-xml", metavar="DIR", help="write each guest's status XML here")
    args = p.parse_args(argv)
    if args.size is None and args.events is None:
        p.error("give --size or --events")
    size = parse_size(args.size) if args.size else None
    if args.output == "-":
        summary = generate(
            sys.stdout.buffer,
            size=size,
            events=args.events,
            enriched=args.enriched,
            vms=args.vms,
            seed=args.seed,
            start=args.start,
            rate=args.rate,
            junk=args.junk,
        )
    else:
        with open(args.output, "wb") as fh:
            summary = generate(
                fh,
                size=size,
                events=args.events,
                enriched=args.enriched,
                vms=args.vms,
                seed=args.seed,
                start=args.start,
                rate=args.rate,
                junk=args.junk,
            )
    if args.live_xml:
        d = Path(args.live_xml)
        d.mkdir(parents=True, exist_ok=True)
        for vm in make_vms(args.vms, args.seed):
            (d / f"{vm.name}.xml").write_text(status_xml(vm))
    print(
        f"wrote {summary.bytes} bytes, {summary.lines} records, {summary.events} events, "
        f"{summary.qemu_denials} QEMU denials",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
