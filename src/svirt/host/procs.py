"""Processes: is a pid still the live process we recorded (a zombie has exited; only its
reaping is pending; a pid reused by another process is not ours).

A process is identified by its pid **and** its start time (field 22 of
``/proc/PID/stat``, in clock ticks since boot), never by its name or command line: two
VMs of the same name in two state directories, or libvirt's VM of that name, are other
processes, and so is whatever got a dead process's pid."""

from __future__ import annotations

import os

__all__ = ["pid_alive", "start_time"]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # The command name is in parentheses and may itself hold ')' or spaces.
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int | None) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), None if it is gone."""
    if pid is None or pid <= 0:
        return None
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])  # field 22 overall; the fields after "(comm)" start at 3
    except ValueError:
        return None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """``pid`` is a live process and, when ``start`` is given, the same process that had
    that start time (not a later process that reused the pid)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    if start is not None:
        try:
            return int(fields[19]) == start
        except (IndexError, ValueError):
            return False
    return True
