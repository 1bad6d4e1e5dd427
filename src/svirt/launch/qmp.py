"""A small synchronous QMP client over a unix socket.

One command at a time: :meth:`QMPClient.execute` sends a command with a fresh ``id`` and
reads until the reply carrying that id arrives. Asynchronous events read meanwhile are
queued (bounded), so :meth:`QMPClient.wait_event` can find one that arrived while
another command was running (``DEVICE_DELETED`` often comes before ``device_del``'s
own reply). Every wait has a deadline; nothing blocks forever.

Errors are :class:`QMPError` (a :class:`~svirt.errors.LaunchError`), with libvirt's
texts where libvirt has one: ``internal error: unable to execute QEMU command 'X':
<desc>``, ``End of file from qemu monitor``.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import socket
import stat
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from svirt.errors import PREFIX_INTERNAL, LaunchError
from svirt.host import selinux as host_selinux
from svirt.host.procs import pid_alive

__all__ = ["DEFAULT_TIMEOUT", "QMPClient", "QMPError"]

DEFAULT_TIMEOUT = 10.0
_MAX_EVENTS = 1024  # a guest can emit events faster than anyone reads them
_MAX_LINE = 16 * 1024 * 1024  # QMP replies (query-block on many disks) stay far below


class QMPError(LaunchError):
    """A QMP exchange failed. ``error_class`` is QMP's error class (``GenericError``,
    ``CommandNotFound``, ...) when QEMU answered with an error, else None."""

    def __init__(self, message: str, error_class: str | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class


def _client_socket(vm_label: str | None) -> socket.socket:
    context = host_selinux.daemon_socket_context(vm_label) if vm_label else None
    if context is None:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        host_selinux.set_socket_create_context(context)
    except OSError as exc:
        raise QMPError(
            f"{PREFIX_INTERNAL}cannot label the monitor client socket {context}: {exc.strerror}"
        ) from None
    try:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    finally:
        host_selinux.set_socket_create_context(None)


class QMPClient:
    """A connected, capability-negotiated QMP session.

    Use :meth:`connect` (path) or :meth:`from_socket` (an already connected socket);
    both read the greeting and send ``qmp_capabilities``. Close with :meth:`close` or a
    ``with`` block.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._next_id = 0
        self._closed = False
        self.timeout = timeout
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=_MAX_EVENTS)
        self.greeting: dict[str, Any] = {}
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_socket(cls, sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT) -> QMPClient:
        return cls(sock, timeout=timeout)

    @classmethod
    def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pid: int | None = None,
        vm_label: str | None = None,
    ) -> QMPClient:
        """Connect to QEMU's monitor socket, retrying while the socket is not there yet
        (QEMU creates it during start-up). With ``pid``, gives up as soon as that
        process is gone instead of waiting for the deadline. ``vm_label`` (the VM's
        process label) gives the client socket the VM's level where SELinux is enabled
        (:func:`svirt.host.selinux.daemon_socket_context`), as libvirt does."""
        deadline = time.monotonic() + timeout
        target = os.fspath(path)
        delay = 0.001
        while True:
            sock = _client_socket(vm_label)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(target)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if not isinstance(exc, FileNotFoundError) and not _is_socket(target):
                    raise QMPError(
                        f"{PREFIX_INTERNAL}failed to connect to monitor socket {target}: "
                        "not a socket"
                    ) from None
                if pid is not None and not pid_alive(pid):
                    raise QMPError(
                        f"{PREFIX_INTERNAL}QEMU process {pid} exited before its monitor "
                        f"{target} accepted connections"
                    ) from None
                if time.monotonic() >= deadline:
                    raise QMPError(
                        f"{PREFIX_INTERNAL}monitor socket did not show up in {timeout:g}s: "
                        f"{target}: {exc.strerror}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except OSError as exc:
                sock.close()
                raise QMPError(
                    f"{PREFIX_INTERNAL}failed to connect to monitor socket {target}: "
                    f"{exc.strerror or exc}"
                ) from None
        return cls(sock, timeout=max(timeout, deadline - time.monotonic()))

    def _handshake(self) -> None:
        deadline = time.monotonic() + self.timeout
        msg = self._read_message(deadline, "the QMP greeting", self.timeout)
        if "QMP" not in msg:
            raise QMPError(f"{PREFIX_INTERNAL}unexpected QMP greeting: {_short(msg)}")
        self.greeting = msg
        self.execute("qmp_capabilities")

    # -- I/O -------------------------------------------------------------------------------

    def _read_message(self, deadline: float, waiting_for: str, timeout: float) -> dict[str, Any]:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    raise QMPError(
                        f"{PREFIX_INTERNAL}cannot parse QEMU monitor reply: {line[:200]!r}"
                    ) from None
                if not isinstance(msg, dict):
                    raise QMPError(f"{PREFIX_INTERNAL}unexpected QEMU monitor reply: {_short(msg)}")
                return msg
            if len(self._buf) > _MAX_LINE:
                raise QMPError(f"{PREFIX_INTERNAL}QEMU monitor reply too large")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QMPError(
                    f"{PREFIX_INTERNAL}timed out after {timeout:g}s waiting for "
                    f"{waiting_for} from the QEMU monitor"
                )
            if self._closed:
                raise QMPError(f"{PREFIX_INTERNAL}End of file from qemu monitor")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ECONNRESET:
                    chunk = b""
                else:
                    raise QMPError(
                        f"{PREFIX_INTERNAL}cannot read from the QEMU monitor: {exc.strerror}"
                    ) from None
            if not chunk:
                raise QMPError(f"{PREFIX_INTERNAL}End of file from qemu monitor")
            self._buf += chunk

    def _send(self, msg: Mapping[str, Any]) -> None:
        if self._closed:
            raise QMPError(f"{PREFIX_INTERNAL}the QEMU monitor is closed")
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        self._sock.settimeout(self.timeout)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise QMPError(
                f"{PREFIX_INTERNAL}cannot send to the QEMU monitor: {exc.strerror or exc}"
            ) from None

    # -- commands --------------------------------------------------------------------------

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one QMP command and return its ``return`` value.

        Raises :class:`QMPError` on an ``error`` reply, a timeout or a closed monitor.
        """
        self._next_id += 1
        cmd_id = f"svirt-{self._next_id}"
        msg: dict[str, Any] = {"execute": command, "id": cmd_id}
        if arguments:
            msg["arguments"] = dict(arguments)
        self._send(msg)
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            reply = self._read_message(deadline, f"the reply to '{command}'", wait)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != cmd_id:
                continue  # a stale reply to an earlier command that timed out
            if "error" in reply:
                err = reply["error"] if isinstance(reply["error"], dict) else {}
                desc = err.get("desc", "unknown error")
                raise QMPError(
                    f"{PREFIX_INTERNAL}unable to execute QEMU command '{command}': {desc}",
                    error_class=err.get("class"),
                )
            return reply.get("return")

    def wait_event(
        self,
        name: str,
        *,
        data: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Return (and dequeue) the first event called ``name`` whose ``data`` contains
        the given items, reading the monitor until it arrives or the deadline passes."""

        def matches(ev: dict[str, Any]) -> bool:
            if ev.get("event") != name:
                return False
            ev_data = ev.get("data") or {}
            return all(ev_data.get(k) == v for k, v in (data or {}).items())

        for ev in list(self.events):
            if matches(ev):
                self.events.remove(ev)
                return ev
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            msg = self._read_message(deadline, f"event {name}", wait)
            if "event" not in msg:
                continue
            if matches(msg):
                return msg
            self.events.append(msg)

    def drain_events(self) -> list[dict[str, Any]]:
        """The queued events, oldest first; the queue is emptied."""
        out = list(self.events)
        self.events.clear()
        return out

    # -- helpers ---------------------------------------------------------------------------

    def query_status(self) -> dict[str, Any]:
        """``query-status``: ``{"status": "running", "running": true, ...}``."""
        result = self.execute("query-status")
        if not isinstance(result, dict):
            raise QMPError(f"{PREFIX_INTERNAL}unexpected query-status reply: {_short(result)}")
        return result

    def system_powerdown(self) -> None:
        """Ask the guest to power off (ACPI); the guest may ignore it."""
        self.execute("system_powerdown")

    def cont(self) -> None:
        self.execute("cont")

    def quit(self) -> None:
        """Make QEMU exit. QEMU may close the socket right after (or instead of) its
        reply; either means the command was taken."""
        try:
            self.execute("quit")
        except QMPError as exc:
            if "End of file" not in exc.message:
                raise
        self.close()

    def blockdev_add(self, node: Mapping[str, Any]) -> None:
        self.execute("blockdev-add", node)

    def blockdev_del(self, node_name: str) -> None:
        self.execute("blockdev-del", {"node-name": node_name})

    def device_add(self, device: Mapping[str, Any]) -> None:
        """``device_add`` with the same dictionary ``-device`` takes (``driver``, ``id``...)."""
        self.execute("device_add", device)

    def device_del(self, device_id: str, *, timeout: float | None = None) -> None:
        """Unplug a device and wait for QEMU's ``DEVICE_DELETED`` for it.

        PCI unplug needs the guest's cooperation; a guest that does not answer makes this
        time out with the device still present.
        """
        self.execute("device_del", {"id": device_id})
        self.wait_event("DEVICE_DELETED", data={"device": device_id}, timeout=timeout)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _short(obj: object) -> str:
    text = json.dumps(obj) if not isinstance(obj, str) else obj
    return text if len(text) <= 200 else text[:200] + "..."
