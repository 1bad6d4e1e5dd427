# ruff: noqa: E501 - record templates are long lines, as auditd writes them
"""A second audit log generator, independent of ``gen_audit_log.py`` (which svirt was tuned
on): the shapes of a real auditd log on a virtualization host, at a chosen event rate.

- SYSCALL records carry the argument values real system calls pass (``openat`` with
  ``AT_FDCWD`` and ``O_RDONLY|O_CLOEXEC``, ``O_CREAT`` modes, ``chmod``/``fchmodat`` modes,
  ``chown`` uids, ``socket`` domain/type/protocol, ``kill``/``tgkill`` signals,
  ``ptrace`` requests, ``mmap``/``mprotect`` protections, ``clone`` flags, ``ioctl``
  requests, ``setsockopt`` levels, ``prctl`` options, ``unshare`` flags, ``bpf``
  commands), followed by CWD, PATH (with ``nametype``, ``mode``, ``ouid``), EXECVE,
  SOCKADDR and PROCTITLE records, with other events interleaved between the AVC and the
  SYSCALL the way concurrent CPUs write them;
- AVC denials from QEMU guests (sVirt categories) and host daemons, single and multi
  permission (``{ read write }``), the same object denied with different permissions,
  permissive and enforcing; USER_AVC from D-Bus and systemd;
- PAM/sshd/sudo sessions (USER_AUTH, USER_ACCT, CRED_ACQ, LOGIN, USER_START, USER_CMD,
  CRED_DISP, USER_END), SERVICE_START/STOP, BPF, NETFILTER_CFG, CONFIG_CHANGE,
  ANOM_ABEND, VIRT_CONTROL/VIRT_MACHINE_ID/VIRT_RESOURCE;
- ``--rate`` events per second of log time (e.g. 40 and 140); ``--enriched-fraction``
  the share of events written in the ENRICHED format (0x1D and the interpreted values of
  the id, arch and syscall fields; records without such fields get nothing).

Deterministic for a seed.

    .venv/bin/python bench/gen_audit_log_realistic.py --events 2000 --rate 40 -o /tmp/a.log
    .venv/bin/python bench/gen_audit_log_realistic.py --size 300M --rate 140 --seed 2 -o /tmp/b.log
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["generate", "parse_size"]

START = 1767225600.0  # 2026-01-01 00:00:00 UTC
GS = "\x1d"
UNSET = 4294967295
NAMES = {0: "root", 107: "qemu", 81: "dbus", 1000: "alice", 1001: "bob", 33: "www-data"}
NAMES[UNSET] = "unset"
GROUPS = {0: "root", 107: "qemu", 81: "dbus", 1000: "alice", 1001: "bob", 33: "www-data"}
GROUPS[UNSET] = "unset"
NR = {
    "read": 0,
    "write": 1,
    "open": 2,
    "close": 3,
    "mmap": 9,
    "mprotect": 10,
    "ioctl": 16,
    "socket": 41,
    "connect": 42,
    "bind": 49,
    "setsockopt": 54,
    "clone": 56,
    "execve": 59,
    "kill": 62,
    "fcntl": 72,
    "rename": 82,
    "mkdir": 83,
    "unlink": 87,
    "chmod": 90,
    "fchmod": 91,
    "chown": 92,
    "fchown": 93,
    "ptrace": 101,
    "setuid": 105,
    "setgid": 106,
    "prctl": 157,
    "mount": 165,
    "tgkill": 234,
    "openat": 257,
    "mkdirat": 258,
    "fchownat": 260,
    "unlinkat": 263,
    "fchmodat": 268,
    "unshare": 272,
    "bpf": 321,
    "memfd_create": 319,
    "openat2": 437,
}
PROGS = [
    ("qemu-kvm", "/usr/libexec/qemu-kvm", 107, "system_u:system_r:svirt_t:s0:c{a},c{b}"),
    ("libvirtd", "/usr/sbin/libvirtd", 0, "system_u:system_r:virtd_t:s0-s0:c0.c1023"),
    ("systemd", "/usr/lib/systemd/systemd", 0, "system_u:system_r:init_t:s0"),
    ("sshd", "/usr/sbin/sshd", 0, "system_u:system_r:sshd_t:s0-s0:c0.c1023"),
    ("bash", "/usr/bin/bash", 1000, "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"),
    ("crond", "/usr/sbin/crond", 0, "system_u:system_r:crond_t:s0-s0:c0.c1023"),
    ("nginx", "/usr/sbin/nginx", 33, "system_u:system_r:httpd_t:s0"),
    ("rsyslogd", "/usr/sbin/rsyslogd", 0, "system_u:system_r:syslogd_t:s0"),
]
FILES = [
    ("/etc/passwd", "etc_t", 0o100644),
    ("/etc/shadow", "shadow_t", 0o100000),
    ("/var/lib/libvirt/images/vm{n}.qcow2", "svirt_image_t:s0:c{a},c{b}", 0o100600),
    ("/var/lib/libvirt/images/base.img", "virt_image_t", 0o100644),
    ("/home/alice/disk.raw", "user_home_t", 0o100644),
    ("/run/libvirt/qemu/vm{n}.pid", "qemu_var_run_t", 0o100644),
    ("/tmp/tmp.{r}", "tmp_t", 0o100600),
    ("/var/log/messages", "var_log_t", 0o100600),
    ("/dev/kvm", "kvm_device_t", 0o20666),
    ("/etc/svirt", "etc_t", 0o40755),
]
AVC_CASES = [
    # (process template, target, class, perms choices)
    ("svirt", "system_u:object_r:virt_image_t:s0", "file", [["read"], ["read", "write"], ["open"]]),
    ("svirt", "OTHERVM", "file", [["read", "write"], ["getattr"], ["read"]]),
    ("svirt", "system_u:object_r:nfs_t:s0", "file", [["read"], ["getattr"], ["read", "write"]]),
    ("svirt", "unconfined_u:object_r:user_home_t:s0", "file", [["read"], ["getattr", "open"]]),
    ("svirt", "system_u:object_r:svirt_image_t:s0:c{a},c{b}", "file", [["getattr"], ["read"]]),
    ("svirt", "system_u:object_r:tmp_t:s0", "dir", [["search"], ["write", "add_name"]]),
    (
        "system_u:system_r:httpd_t:s0",
        "unconfined_u:object_r:user_home_t:s0",
        "file",
        [["read"], ["getattr"], ["read", "open"]],
    ),
    (
        "system_u:system_r:syslogd_t:s0",
        "system_u:object_r:virt_log_t:s0",
        "file",
        [["append"], ["getattr"], ["write"]],
    ),
    (
        "system_u:system_r:virtd_t:s0-s0:c0.c1023",
        "system_u:object_r:shadow_t:s0",
        "file",
        [["read"], ["getattr"]],
    ),
    (
        "system_u:system_r:crond_t:s0-s0:c0.c1023",
        "system_u:object_r:svirt_image_t:s0:c{a},c{b}",
        "file",
        [["read"], ["getattr"]],
    ),
]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def hexenc(text: str) -> str:
    return text.encode().hex().upper()


def enc(text: str) -> str:
    """A value as the kernel writes it: quoted, or hex when it needs to be."""
    if any(c in text for c in ' "\x7f') or any(ord(c) < 0x21 for c in text):
        return hexenc(text)
    return f'"{text}"'


class Log:
    def __init__(self, out: BinaryIO, rng: random.Random, rate: float, efrac: float) -> None:
        self.out = out
        self.rng = rng
        self.t = START
        self.serial = 1000
        self.rate = rate
        self.efrac = efrac
        self.bytes = 0
        self.lines = 0
        self.events = 0
        # records written later (the tail of an event whose AVC came first)
        self.delayed: list[tuple[int, list[str]]] = []
        self.enriched = False

    def stamp(self) -> str:
        self.t += self.rng.expovariate(self.rate)
        self.serial += 1 + (self.rng.random() < 0.05)
        self.events += 1
        self.enriched = self.rng.random() < self.efrac
        return f"{self.t:.3f}:{self.serial}"

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "surrogateescape")
        self.out.write(data)
        self.bytes += len(data)
        self.lines += 1
        # flush delayed tails whose turn has come
        if self.delayed:
            keep: list[tuple[int, list[str]]] = []
            for n, rest in self.delayed:
                if n <= 0:
                    for r in rest:
                        d = (r + "\n").encode("utf-8", "surrogateescape")
                        self.out.write(d)
                        self.bytes += len(d)
                        self.lines += 1
                else:
                    keep.append((n - 1, rest))
            self.delayed = keep

    def flush(self) -> None:
        for _, rest in self.delayed:
            for r in rest:
                d = (r + "\n").encode("utf-8", "surrogateescape")
                self.out.write(d)
                self.bytes += len(d)
                self.lines += 1
        self.delayed = []

    def ids(self, uid: int, auid: int, gid: int | None = None) -> tuple[str, str]:
        g = uid if gid is None else gid
        raw = (
            f"auid={auid} uid={uid} gid={g} euid={uid} suid={uid} fsuid={uid} "
            f"egid={g} sgid={g} fsgid={g}"
        )
        names = (
            f'AUID="{NAMES.get(auid, auid)}" UID="{NAMES.get(uid, uid)}" '
            f'GID="{GROUPS.get(g, g)}" EUID="{NAMES.get(uid, uid)}" SUID="{NAMES.get(uid, uid)}" '
            f'FSUID="{NAMES.get(uid, uid)}" EGID="{GROUPS.get(g, g)}" SGID="{GROUPS.get(g, g)}" '
            f'FSGID="{GROUPS.get(g, g)}"'
        )
        return raw, names


def _prog(rng: random.Random, vms: list[tuple[int, int, int]]) -> tuple[str, str, int, str, int]:
    comm, exe, uid, subj = rng.choice(PROGS)
    vm = rng.choice(vms)
    if "{a}" in subj:
        subj = subj.format(a=vm[0], b=vm[1])
    if comm == "qemu-kvm" and rng.random() < 0.3:
        comm = f"CPU {rng.randrange(4)}/KVM"
    return comm, exe, uid, subj, vm[2]


def _args(rng: random.Random, call: str) -> tuple[list[int], int, str]:
    """(a0..a3, exit, success) as the real call would have them."""
    ptr = lambda: rng.randrange(0x55D000000000, 0x7FFFFFFFF000)  # noqa: E731
    fd = rng.randrange(3, 60)
    ok = rng.random() < 0.8
    ex = 0
    a: list[int]
    if call == "openat":
        flags = rng.choice([0o2000000, 0o2000000 | 0o200000, 0o101 | 0o1000, 0o2 | 0o100 | 0o200])
        flags |= rng.choice([0, 0, 0o4010000, 0o20200000 & ~0o200000, 0o4000])
        a = [0xFFFFFF9C, ptr(), flags, rng.choice([0, 0o644, 0o600, 0o666])]
        ex = fd
    elif call == "open":
        a = [ptr(), rng.choice([0, 0o2000000, 0o1101, 0o100 | 0o2]), rng.choice([0, 0o644]), 0]
        ex = fd
    elif call == "openat2":
        a = [0xFFFFFF9C, ptr(), ptr(), 24]
        ex = fd
    elif call in ("chmod", "fchmod", "fchmodat"):
        mode = rng.choice([0o644, 0o600, 0o755, 0o4755, 0o1777, 0o2750])
        a = [0xFFFFFF9C, ptr(), mode, 0] if call == "fchmodat" else [ptr(), mode, 0, 0]
        if call == "fchmod":
            a[0] = fd
    elif call in ("chown", "fchown", "fchownat"):
        uid = rng.choice([0, 107, 1000, 0xFFFFFFFF])
        gid = rng.choice([0, 107, 1000, 0xFFFFFFFF])
        a = [0xFFFFFF9C, ptr(), uid, gid] if call == "fchownat" else [ptr(), uid, gid, 0]
        if call == "fchown":
            a[0] = fd
    elif call == "socket":
        a = [rng.choice([1, 2, 10, 16, 17]), rng.choice([1, 2, 3, 0x80001, 0x80802]), 0, 0]
        a[2] = rng.choice([0, 6, 17, 9]) if a[0] != 16 else rng.choice([0, 9, 15])
        ex = fd
    elif call in ("connect", "bind"):
        a = [fd, ptr(), rng.choice([16, 28, 110]), 0]
    elif call == "setsockopt":
        level = rng.choice([1, 6, 0, 41])
        opt = {1: rng.choice([2, 7, 9, 20]), 6: 1, 0: rng.choice([1, 2]), 41: 26}[level]
        a = [fd, level, opt, ptr()]
    elif call in ("kill", "tgkill"):
        sig = rng.choice([9, 15, 1, 0, 19, 10])
        a = [rng.randrange(300, 90000), sig, 0, 0]
        if call == "tgkill":
            a = [a[0], a[0] + 1, sig, 0]
    elif call == "ptrace":
        a = [rng.choice([16, 0x4206, 17, 0]), rng.randrange(300, 90000), 0, 0]
    elif call in ("mmap", "mprotect"):
        prot = rng.choice([1, 3, 5, 7, 0])
        if call == "mmap":
            a = [
                0,
                rng.choice([4096, 1 << 20, 1 << 30]),
                prot,
                rng.choice([0x22, 0x1, 0x802, 0x4022]),
            ]
        else:
            a = [ptr() & ~0xFFF, 4096 * rng.randrange(1, 64), prot, 0]
        ex = ptr() & ~0xFFF if call == "mmap" else 0
    elif call == "clone":
        a = [rng.choice([0x3D0F00, 0x1200011, 0x11]), 0, ptr(), ptr()]
        ex = rng.randrange(300, 90000)
    elif call == "unshare":
        a = [rng.choice([0x20000, 0x40000000, 0x60020000, 0x8000000]), 0, 0, 0]
    elif call == "ioctl":
        a = [fd, rng.choice([0x5401, 0x5413, 0xAE01, 0xAE80, 0x5421, 0x8933, 0x80045430]), ptr(), 0]
    elif call == "prctl":
        a = [rng.choice([15, 22, 38, 4, 8]), rng.choice([0, 1, 2]), 0, 0]
    elif call == "fcntl":
        a = [fd, rng.choice([1, 2, 3, 4, 1030]), rng.choice([0, 1, 0o4000]), 0]
    elif call == "bpf":
        a = [rng.choice([0, 5, 1, 2, 14, 18]), ptr(), 72, 0]
        ex = fd
    elif call in ("setuid", "setgid"):
        a = [rng.choice([0, 107, 1000]), 0, 0, 0]
    elif call == "memfd_create":
        a = [ptr(), rng.choice([1, 3, 0]), 0, 0]
        ex = fd
    elif call == "mount":
        a = [ptr(), ptr(), ptr(), rng.choice([0x1000, 0x21, 0x4000, 0])]
    elif call in ("unlinkat", "mkdirat"):
        a = [0xFFFFFF9C, ptr(), rng.choice([0, 0x200, 0o755]), 0]
    elif call == "execve":
        a = [ptr(), ptr(), ptr(), 0]
    else:
        a = [fd if call in ("read", "write", "close") else ptr(), ptr(), rng.randrange(1, 9000), 0]
        ex = a[2] if call in ("read", "write") else 0
    if not ok:
        ex = -rng.choice([13, 1, 2, 22, 11, 95, 9, 17])
    return a, ex, "yes" if ex >= 0 else "no"


def ev_syscall(log: Log, vms: list[tuple[int, int, int]], avc: list[str] | None = None) -> None:
    rng = log.rng
    st = log.stamp()
    comm, exe, uid, subj, vmn = _prog(rng, vms)
    call = rng.choice(list(NR))
    a, ex, ok = _args(rng, call)
    if avc is not None:
        ex, ok = -13, "no"
    auid = rng.choice([UNSET, UNSET, 1000, 0])
    ses = UNSET if auid == UNSET else rng.randrange(1, 40)
    idraw, idnames = log.ids(uid, auid)
    path_calls = {"open", "openat", "chmod", "fchmodat", "chown", "fchownat", "unlink"}
    path_calls |= {"unlinkat", "rename", "mkdir", "mkdirat", "execve", "openat2", "mount"}
    items = (2 if call == "execve" else 1) if call in path_calls else 0
    key = rng.choice(['"virt-images"', '"exec"', '"perm_mod"', "(null)", '"access"'])
    if rng.random() < 0.03:
        key = hexenc("perm_mod\x01access")
    tty = "(none)" if auid == UNSET else rng.choice(["pts0", "pts1", "(none)"])
    rec = (
        f"type=SYSCALL msg=audit({st}): arch=c000003e syscall={NR[call]} success={ok} "
        f"exit={ex} a0={a[0]:x} a1={a[1]:x} a2={a[2]:x} a3={a[3]:x} items={items} "
        f"ppid={rng.randrange(1, 5000)} pid={rng.randrange(300, 90000)} {idraw} "
        f"tty={tty} ses={ses} comm={enc(comm)} exe={enc(exe)} subj={subj} key={key}"
    )
    if log.enriched:
        rec += f"{GS}ARCH=x86_64 SYSCALL={call} {idnames}"
    recs = [rec]
    if call == "execve":
        argv = [exe, *rng.choice([["-c", "echo hi"], ["--version"], ["-name", "guest=vm1"]])]
        args = " ".join(f"a{i}={enc(x)}" for i, x in enumerate(argv))
        recs.append(f"type=EXECVE msg=audit({st}): argc={len(argv)} {args}")
    if call in ("connect", "bind"):
        saddr = rng.choice(
            ["02000016C0A80101" + "0" * 16, "01002F72756E2F6C6962766972742F736F636B00", "0A00"]
        )
        recs.append(f"type=SOCKADDR msg=audit({st}): saddr={saddr}")
    if items:
        cwd = rng.choice(["/", "/root", "/var/lib/libvirt/images", "/home/alice dir"])
        recs.append(f"type=CWD msg=audit({st}): cwd={enc(cwd)}")
        for i in range(items):
            path, ftype, mode = rng.choice(FILES)
            vm = vms[vmn % len(vms)]
            path = path.format(n=vmn, a=vm[0], b=vm[1], r=rng.randrange(10**6))
            ftype = ftype.format(a=vm[0], b=vm[1])
            level = "" if ":s0" in ftype else ":s0"
            ouid = rng.choice([0, 107, 1000])
            nt = rng.choice(["NORMAL", "PARENT", "CREATE", "DELETE"]) if i else "NORMAL"
            p = (
                f"type=PATH msg=audit({st}): item={i} name={enc(path)} inode={rng.randrange(10**7)} "
                f"dev=fd:0{rng.randrange(3)} mode={mode:o} ouid={ouid} ogid={ouid} rdev=00:00 "
                f"obj=system_u:object_r:{ftype}{level} nametype={nt} cap_fp=0 cap_fi=0 cap_fe=0 "
                f"cap_fver=0 cap_frootid=0"
            )
            if log.enriched:
                p += f'{GS}OUID="{NAMES[ouid]}" OGID="{GROUPS[ouid]}"'
            recs.append(p)
    title = exe if rng.random() < 0.5 else f"{exe}\0-name\0guest=vm{vmn},debug-threads=on"
    recs.append(
        f"type=PROCTITLE msg=audit({st}): proctitle={enc(title) if chr(0) not in title else hexenc(title)}"
    )
    if avc is not None:
        avc = [x.replace("STAMP", st) for x in avc]
        log.write(avc[0])
        for extra in avc[1:]:
            log.write(extra)
        log.delayed.append((rng.randrange(0, 6), recs))
        return
    for r in recs:
        log.write(r)


def ev_avc(log: Log, vms: list[tuple[int, int, int]]) -> None:
    rng = log.rng
    proc, tgt, cls, permsets = rng.choice(AVC_CASES)
    vm = rng.choice(vms)
    other = rng.choice([v for v in vms if v != vm] or vms)
    if proc == "svirt":
        proc = f"system_u:system_r:svirt_t:s0:c{vm[0]},c{vm[1]}"
        comm = rng.choice(["qemu-kvm", "CPU 0/KVM", "IO mon_iothread"])
    else:
        comm = rng.choice(["nginx", "rsyslogd", "libvirtd", "crond"])
    if tgt == "OTHERVM":
        tgt = f"system_u:object_r:svirt_image_t:s0:c{other[0]},c{other[1]}"
    tgt = tgt.format(a=other[0], b=other[1])
    lines = []
    for perms in rng.sample(permsets, k=rng.choice([1, 1, 2])):
        lines.append(
            f"type=AVC msg=audit(STAMP): avc:  denied  {{ {' '.join(perms)} }} for  "
            f"pid={rng.randrange(300, 90000)} comm={enc(comm)} name={enc('vm' + str(vm[2]) + '.img')} "
            f'dev="dm-{rng.randrange(3)}" ino={rng.randrange(10**7)} scontext={proc} '
            f"tcontext={tgt} tclass={cls} permissive={rng.choice([0, 0, 0, 1])}"
        )
    ev_syscall(log, vms, avc=lines)


def ev_user_avc(log: Log, vms: list[tuple[int, int, int]]) -> None:
    rng = log.rng
    st = log.stamp()
    if rng.random() < 0.5:
        body = (
            f"avc:  denied  {{ send_msg }} for msgtype=method_call "
            f"interface=org.freedesktop.login1.Manager member=Inhibit dest=org.freedesktop.login1 "
            f"spid={rng.randrange(300, 9000)} tpid=612 scontext=system_u:system_r:virtd_t:s0-s0:c0.c1023 "
            f"tcontext=system_u:system_r:systemd_logind_t:s0 tclass=dbus permissive=0 "
            f' exe="/usr/bin/dbus-daemon" sauid=81 hostname=? addr=? terminal=?'
        )
        uid = 81
    else:
        body = (
            f"avc:  denied  {{ {rng.choice(['status', 'start', 'stop'])} }} for "
            f"auid={rng.choice(['n/a', '0', '1000'])} uid=0 gid=0 "
            f'path="/usr/lib/systemd/system/libvirtd.service" cmdline="" '
            f"scontext=unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023 "
            f"tcontext=system_u:object_r:systemd_unit_file_t:s0 tclass=service "
            f' exe="/usr/lib/systemd/systemd" sauid=0 hostname=? addr=? terminal=?'
        )
        uid = 0
    rec = (
        f"type=USER_AVC msg=audit({st}): pid={1 if uid == 0 else 611} uid={uid} auid={UNSET} "
        f"ses={UNSET} subj=system_u:system_r:init_t:s0 msg='{body}'"
    )
    if log.enriched:
        rec += f'{GS}UID="{NAMES[uid]}" AUID="unset" SAUID="{NAMES[uid]}"'
    log.write(rec)


def ev_pam(log: Log, vms: list[tuple[int, int, int]]) -> None:
    rng = log.rng
    user = rng.choice(["alice", "bob", "root"])
    uid = {"alice": 1000, "bob": 1001, "root": 0}[user]
    pid = rng.randrange(300, 90000)
    ses = rng.randrange(1, 400)
    addr = rng.choice(["192.168.1.20", "10.0.0.7", "?"])
    res = rng.choice(["success", "success", "failed"])
    sub = "system_u:system_r:sshd_t:s0-s0:c0.c1023"
    for kind, op in [
        ("USER_AUTH", "PAM:authentication grantors=pam_unix"),
        ("USER_ACCT", "PAM:accounting grantors=pam_unix,pam_localuser"),
        ("CRED_ACQ", "PAM:setcred grantors=pam_unix"),
    ]:
        st = log.stamp()
        rec = (
            f"type={kind} msg=audit({st}): pid={pid} uid=0 auid={UNSET} ses={UNSET} subj={sub} "
            f'msg=\'op={op} acct="{user}" exe="/usr/sbin/sshd" hostname={addr} addr={addr} '
            f"terminal=ssh res={res}'"
        )
        if log.enriched:
            rec += f'{GS}UID="root" AUID="unset"'
        log.write(rec)
        if res == "failed":
            return
    st = log.stamp()
    login = (
        f"type=LOGIN msg=audit({st}): pid={pid} uid=0 subj={sub} old-auid={UNSET} "
        f"auid={uid} tty=(none) old-ses={UNSET} ses={ses} res=1"
    )
    if log.enriched:
        login += f'{GS}UID="root" OLD-AUID="unset" AUID="{user}"'
    log.write(login)
    idraw, idnames = log.ids(0, uid)
    sc = (
        f"type=SYSCALL msg=audit({st}): arch=c000003e syscall=1 success=yes exit=4 a0=3 "
        f"a1={rng.randrange(0x7FF000000000, 0x7FFFFFFFF000):x} a2=4 a3=0 items=0 ppid=1 pid={pid} "
        f'{idraw} tty=(none) ses={ses} comm="sshd" exe="/usr/sbin/sshd" subj={sub} key=(null)'
    )
    if log.enriched:
        sc += f"{GS}ARCH=x86_64 SYSCALL=write {idnames}"
    log.write(sc)
    log.write(f"type=PROCTITLE msg=audit({st}): proctitle=737368643A20{hexenc(user)}205B707269765D")
    for kind, op in [
        ("USER_START", "PAM:session_open grantors=pam_selinux,pam_loginuid"),
        ("USER_CMD", None),
        ("CRED_DISP", "PAM:setcred grantors=pam_unix"),
        ("USER_END", "PAM:session_close grantors=pam_selinux,pam_loginuid"),
    ]:
        st = log.stamp()
        if op is None:
            cmd = hexenc(rng.choice(["virsh list --all", "systemctl restart libvirtd"]))
            inner = f'cwd="/home/{user}" cmd={cmd} exe="/usr/bin/sudo" terminal=pts/0 res=success'
        else:
            inner = (
                f'op={op} acct="{user}" exe="/usr/sbin/sshd" hostname={addr} addr={addr} '
                f"terminal=ssh res=success"
            )
        rec = (
            f"type={kind} msg=audit({st}): pid={pid} uid=0 auid={uid} ses={ses} subj={sub} "
            f"msg='{inner}'"
        )
        if log.enriched:
            rec += f'{GS}UID="root" AUID="{user}"'
        log.write(rec)


def ev_misc(log: Log, vms: list[tuple[int, int, int]]) -> None:
    rng = log.rng
    st = log.stamp()
    kind = rng.randrange(7)
    sub = "system_u:system_r:init_t:s0"
    if kind == 0:
        unit = rng.choice(["libvirtd", "virtqemud", "systemd-tmpfiles-clean", "user@1000"])
        t = rng.choice(["SERVICE_START", "SERVICE_STOP"])
        rec = (
            f"type={t} msg=audit({st}): pid=1 uid=0 auid={UNSET} ses={UNSET} subj={sub} "
            f'msg=\'unit={unit} comm="systemd" exe="/usr/lib/systemd/systemd" hostname=? addr=? '
            f"terminal=? res={rng.choice(['success', 'failed'])}'"
        )
        if log.enriched:
            rec += f'{GS}UID="root" AUID="unset"'
    elif kind == 1:
        rec = f"type=BPF msg=audit({st}): prog-id={rng.randrange(1, 300)} op={rng.choice(['LOAD', 'UNLOAD'])}"
    elif kind == 2:
        rec = (
            f"type=NETFILTER_CFG msg=audit({st}): table=filter family={rng.choice([2, 10, 7])} "
            f"entries={rng.randrange(1, 90)} op={rng.choice(['nft_register_chain', 'xt_replace'])} "
            f'pid={rng.randrange(300, 9000)} subj=system_u:system_r:iptables_t:s0 comm="iptables"'
        )
    elif kind == 3:
        rec = (
            f"type=CONFIG_CHANGE msg=audit({st}): auid={rng.choice([UNSET, 0])} ses={UNSET} "
            f"subj=system_u:system_r:unconfined_service_t:s0 op=add_rule "
            f'key="{rng.choice(["exec", "perm_mod", "virt-images"])}" list={rng.choice([4, 2])} res=1'
        )
        if log.enriched:
            rec += f'{GS}AUID="{NAMES[UNSET]}"'
    elif kind == 4:
        vm = rng.choice(vms)
        rec = (
            f"type=ANOM_ABEND msg=audit({st}): auid={UNSET} uid=107 gid=107 ses={UNSET} "
            f"subj=system_u:system_r:svirt_t:s0:c{vm[0]},c{vm[1]} pid={rng.randrange(300, 90000)} "
            f'comm="qemu-kvm" exe="/usr/libexec/qemu-kvm" sig={rng.choice([6, 11])} res=1'
        )
        if log.enriched:
            rec += f'{GS}AUID="unset" UID="qemu" GID="qemu"'
    elif kind == 5:
        vm = rng.choice(vms)
        t = rng.choice(["VIRT_CONTROL", "VIRT_MACHINE_ID", "VIRT_RESOURCE"])
        inner = {
            "VIRT_CONTROL": f'virt=kvm op=start reason=booted vm="vm{vm[2]}" uuid=0c1a{vm[2]:04d}-1111-2222-3333-444455556666 vm-pid={rng.randrange(300, 90000)}',
            "VIRT_MACHINE_ID": f'virt=kvm vm="vm{vm[2]}" uuid=0c1a{vm[2]:04d}-1111-2222-3333-444455556666 vm-ctx=system_u:system_r:svirt_t:s0:c{vm[0]},c{vm[1]} img-ctx=system_u:object_r:svirt_image_t:s0:c{vm[0]},c{vm[1]} model=selinux',
            "VIRT_RESOURCE": f'virt=kvm resrc=disk reason=start vm="vm{vm[2]}" uuid=0c1a{vm[2]:04d}-1111-2222-3333-444455556666 old-disk="?" new-disk="/var/lib/libvirt/images/vm{vm[2]}.qcow2"',
        }[t]
        rec = (
            f"type={t} msg=audit({st}): pid={rng.randrange(300, 9000)} uid=0 auid={UNSET} "
            f"ses={UNSET} subj=system_u:system_r:virtd_t:s0-s0:c0.c1023 msg='{inner} "
            f'exe="/usr/sbin/libvirtd" hostname=? addr=? terminal=? res=success\''
        )
        if log.enriched:
            rec += f'{GS}UID="root" AUID="unset"'
    else:
        rec = (
            f"type=USER_LOGIN msg=audit({st}): pid={rng.randrange(300, 90000)} uid=0 auid={UNSET} "
            f"ses={UNSET} subj=system_u:system_r:sshd_t:s0-s0:c0.c1023 msg='op=login "
            f'acct="{rng.choice(["alice", "admin", "(unknown)"])}" exe="/usr/sbin/sshd" '
            f"hostname=? addr=203.0.113.{rng.randrange(1, 254)} terminal=ssh res=failed'"
        )
        if log.enriched:
            rec += f'{GS}UID="root" AUID="unset"'
    log.write(rec)


MIX: list[tuple[float, Callable[[Log, list[tuple[int, int, int]]], None]]] = [
    (50, ev_syscall),
    (14, ev_avc),
    (6, ev_user_avc),
    (4, ev_pam),
    (16, ev_misc),
]


def generate(
    out: BinaryIO,
    *,
    size: int | None = None,
    events: int | None = None,
    rate: float = 40.0,
    enriched_fraction: float = 0.5,
    seed: int = 1,
) -> tuple[int, int, int]:
    """Write about ``size`` bytes or ``events`` events; (bytes, lines, events)."""
    rng = random.Random(seed)
    vms = [(rng.randrange(0, 512), rng.randrange(512, 1024), n) for n in range(6)]
    log = Log(out, rng, rate, enriched_fraction)
    weights = [w for w, _ in MIX]
    fns = [f for _, f in MIX]
    while True:
        if events is not None and log.events >= events:
            break
        if size is not None and log.bytes >= size:
            break
        rng.choices(fns, weights)[0](log, vms)
    log.flush()
    return log.bytes, log.lines, log.events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", help="about this many bytes (100M, 1G)")
    p.add_argument("--events", type=int, help="this many events")
    p.add_argument("--rate", type=float, default=40.0, help="events per second of log time")
    p.add_argument("--enriched-fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    if not args.size and not args.events:
        p.error("give --size or --events")
    with args.output.open("wb") as fh:
        b, lines, ev = generate(
            fh,
            size=parse_size(args.size) if args.size else None,
            events=args.events,
            rate=args.rate,
            enriched_fraction=args.enriched_fraction,
            seed=args.seed,
        )
    print(f"wrote {b} bytes, {lines} records, {ev} events to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
