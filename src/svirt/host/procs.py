"""Processes: is a pid still a live process (a zombie has exited; only its reaping is
pending), and which process runs a given QEMU guest."""

from __future__ import annotations

import os

__all__ = ["find_qemu", "pid_alive"]


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _state(pid) not in (None, "Z", "X")


def find_qemu(name: str) -> list[int]:
    """Live processes whose command line names the guest (``-name guest=NAME,...``)."""
    marker = f"guest={name},".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(marker) for a in argv) and pid_alive(int(entry)):
            found.append(int(entry))
    return found
