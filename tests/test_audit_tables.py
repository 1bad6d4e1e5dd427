"""The generated constants in ``svirt.audit._tables`` are libaudit's.

Regenerate them with Debian's binding (``import audit``, python3-audit) for each table:
``audit.audit_msg_type_to_name(n)`` for n < 3000, ``audit.audit_machine_to_elf(m)`` /
``audit_machine_to_name(m)`` for m < 12, ``audit.audit_syscall_to_name(n, m)`` for
n < 1024 and the machines x86_64 (1), i386 (0), aarch64 (9).
"""

from __future__ import annotations

import pytest

from svirt.audit._tables import ARCHES, MSG_TYPES, SYSCALLS
from svirt.audit.reader import msg_type_id, msg_type_name

audit = pytest.importorskip("audit", reason="python3-audit (Debian) is not importable")


def test_message_types_match_libaudit() -> None:
    for num in range(3000):
        assert MSG_TYPES.get(num) == audit.audit_msg_type_to_name(num), num


def test_syscalls_and_arches_match_libaudit() -> None:
    machines = {"x86_64": 1, "i386": 0, "aarch64": 9}
    for arch, machine in machines.items():
        for num in range(1024):
            assert SYSCALLS[arch].get(num) == audit.audit_syscall_to_name(num, machine)
    for machine in range(12):
        name = audit.audit_machine_to_name(machine)
        if name:
            assert ARCHES[audit.audit_machine_to_elf(machine)] == name


def test_type_names_round_trip() -> None:
    assert msg_type_id("avc") == 1400 == audit.audit_name_to_msg_type("avc")
    assert msg_type_id("UNKNOWN[1334]") == 1334
    assert msg_type_id("1107") == 1107 and msg_type_id("NOPE") == -1
    assert msg_type_name(1400) == "AVC" and msg_type_name(4242) == "UNKNOWN[4242]"
