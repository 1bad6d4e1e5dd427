"""The QMP client against real QEMU (commands, errors, events, quit), and against a
scripted peer on a socketpair for the faults real QEMU does not produce on demand
(silence, garbage, a closed connection mid-reply)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svirt.domain import parse_domain
from svirt.errors import LaunchError
from svirt.launch import process, qemu
from svirt.launch.qmp import QMPClient, QMPError

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}
DOMAIN = """<domain type='qemu'><name>qmp-test</name><memory unit='MiB'>64</memory>
<devices><serial type='null'/></devices></domain>"""


# --- real QEMU --------------------------------------------------------------------------


class VM:
    def __init__(self, pid: int, log: Path) -> None:
        self.pid, self.log = pid, log
        self.exit_code: int | None = None

    def wait(self, timeout: float = 10) -> int | None:
        self.exit_code = process.wait_exit(self.pid, timeout)
        return self.exit_code


@pytest.fixture
def vm_factory(tmp_path: Path) -> Iterator[Any]:
    vms: list[VM] = []

    def start(*, paused: bool = True, by_path: bool = False) -> tuple[VM, Path]:
        sock_path = tmp_path / f"m{len(vms)}.sock"
        log = tmp_path / f"q{len(vms)}.log"
        domain = parse_domain(DOMAIN)
        if by_path:
            # QEMU creates the socket itself (running as root here).
            cmd = qemu.build_command(domain, qmp_socket=sock_path, start_paused=paused)
            spawned = process.spawn(cmd.argv, log_path=log)
        else:
            sock = process.bind_monitor_socket(sock_path)
            try:
                cmd = qemu.build_command(domain, qmp_fd=sock.fileno(), start_paused=paused)
                spawned = process.spawn(cmd.argv, log_path=log, pass_fds=[sock.fileno()])
            finally:
                sock.close()
        vm = VM(spawned.pid, log)
        vms.append(vm)
        return vm, sock_path

    yield start
    for vm in vms:
        if vm.exit_code is None:
            process.terminate(vm.pid, 5)


@pytest.mark.qemu
def test_session_commands_errors_and_quit(vm_factory: Any) -> None:
    vm, path = vm_factory()
    with QMPClient.connect(path, timeout=20, pid=vm.pid) as qmp:
        assert qmp.greeting["QMP"]["version"]["qemu"]["major"] >= 7
        assert qmp.query_status()["status"] == "prelaunch"
        assert qmp.execute("query-name") == {"name": "qmp-test"}

        with pytest.raises(QMPError) as info:
            qmp.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        assert str(info.value) == (
            "internal error: unable to execute QEMU command 'no-such-command': "
            "The command no-such-command has not been found"
        )
        assert isinstance(info.value, LaunchError)

        with pytest.raises(QMPError) as info:
            qmp.blockdev_del("svirt-nonexistent-format")
        assert info.value.error_class == "GenericError"

        # The session is still usable after errors.
        qmp.cont()
        assert qmp.query_status()["status"] == "running"
        qmp.execute("stop")
        assert qmp.wait_event("STOP")["event"] == "STOP"
        qmp.system_powerdown()  # accepted; a guest without an OS ignores it
        assert qmp.wait_event("POWERDOWN")["event"] == "POWERDOWN"
        qmp.quit()
        assert qmp.closed
    assert vm.wait() == 0


@pytest.mark.qemu
def test_connect_waits_for_a_socket_qemu_creates(vm_factory: Any) -> None:
    vm, path = vm_factory(by_path=True)
    t0 = time.perf_counter()
    with QMPClient.connect(path, timeout=20, pid=vm.pid) as qmp:
        ready = time.perf_counter() - t0
        assert qmp.query_status()["running"] is False
        qmp.quit()
    assert vm.wait() == 0
    print(f"QMP ready {ready * 1000:.1f} ms after spawn returned")


@pytest.mark.qemu
def test_connect_gives_up_when_qemu_dies(tmp_path: Path) -> None:
    # A command line QEMU rejects at once: it exits before creating the socket.
    sock_path = tmp_path / "never.sock"
    cmd = qemu.build_command(parse_domain(DOMAIN), qmp_socket=sock_path)
    spawned = process.spawn([*cmd.argv, "-no-such-option"], log_path=tmp_path / "q.log")
    try:
        with pytest.raises(QMPError, match="exited before its monitor"):
            QMPClient.connect(sock_path, timeout=20, pid=spawned.pid)
    finally:
        assert process.wait_exit(spawned.pid, 10) == 1
    assert "-no-such-option" in (tmp_path / "q.log").read_text()


@pytest.mark.qemu
def test_hotplug_helpers_round_trip(vm_factory: Any, tmp_path: Path) -> None:
    image = tmp_path / "hot.raw"
    image.write_bytes(b"\0" * 1024 * 1024)
    vm, path = vm_factory(paused=False)
    with QMPClient.connect(path, timeout=20) as qmp:
        # A SCSI controller first: SCSI disks unplug without guest cooperation.
        qmp.device_add({"driver": "virtio-scsi-pci", "id": "scsi0"})
        storage = {"driver": "file", "filename": str(image), "node-name": "hot-storage"}
        qmp.blockdev_add(storage)
        qmp.blockdev_add({"driver": "raw", "node-name": "hot-format", "file": "hot-storage"})
        qmp.device_add({"driver": "scsi-hd", "bus": "scsi0.0", "drive": "hot-format", "id": "hd1"})
        assert "hd1" in {b["qdev"] for b in qmp.execute("query-block")}
        qmp.device_del("hd1", timeout=20)  # returns once DEVICE_DELETED arrived
        assert "hd1" not in {b["qdev"] for b in qmp.execute("query-block")}
        qmp.blockdev_del("hot-format")
        qmp.blockdev_del("hot-storage")
        nodes = {n["node-name"] for n in qmp.execute("query-named-block-nodes")}
        assert not nodes & {"hot-format", "hot-storage"}
        qmp.quit()
    assert vm.wait() == 0


# --- scripted peer ----------------------------------------------------------------------


def _peer(script: Any) -> socket.socket:
    """A client socket whose other end runs `script(conn)` in a thread."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def run() -> None:
        with theirs:
            script(theirs)

    threading.Thread(target=run, daemon=True).start()
    return ours


def _send(conn: socket.socket, *msgs: dict[str, Any]) -> None:
    conn.sendall(b"".join(json.dumps(m).encode() + b"\r\n" for m in msgs))


def _recv_cmd(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise EOFError
        data += chunk
    msg: dict[str, Any] = json.loads(data)
    return msg


def _negotiate(conn: socket.socket) -> None:
    _send(conn, GREETING)
    cmd = _recv_cmd(conn)
    assert cmd["execute"] == "qmp_capabilities"
    _send(conn, {"return": {}, "id": cmd["id"]})


def test_timeout_waiting_for_a_reply() -> None:
    done = threading.Event()

    def silent(conn: socket.socket) -> None:
        _negotiate(conn)
        _recv_cmd(conn)
        done.wait(5)  # never answers

    qmp = QMPClient.from_socket(_peer(silent), timeout=5)
    with pytest.raises(QMPError) as info:
        qmp.execute("query-status", timeout=0.2)
    done.set()
    assert str(info.value) == (
        "internal error: timed out after 0.2s waiting for the reply to 'query-status' "
        "from the QEMU monitor"
    )
    qmp.close()


def test_events_are_queued_and_stale_replies_skipped() -> None:
    def chatty(conn: socket.socket) -> None:
        _negotiate(conn)
        cmd = _recv_cmd(conn)
        _send(
            conn,
            {"event": "RESUME", "data": {}},
            {"return": "stale", "id": "svirt-0"},  # an id we never sent
            {"event": "DEVICE_DELETED", "data": {"device": "hd9", "path": "/x"}},
            {"return": {}, "id": cmd["id"]},
        )
        time.sleep(0.5)

    qmp = QMPClient.from_socket(_peer(chatty), timeout=5)
    assert qmp.execute("device_del", {"id": "hd9"}) == {}
    assert qmp.wait_event("DEVICE_DELETED", data={"device": "hd9"})["data"]["path"] == "/x"
    assert [e["event"] for e in qmp.drain_events()] == ["RESUME"]
    qmp.close()


def test_end_of_file_and_garbage() -> None:
    def hangs_up(conn: socket.socket) -> None:
        _negotiate(conn)
        _recv_cmd(conn)

    qmp = QMPClient.from_socket(_peer(hangs_up), timeout=5)
    with pytest.raises(QMPError, match=r"^internal error: End of file from qemu monitor$"):
        qmp.execute("query-status")
    qmp.close()

    def garbage(conn: socket.socket) -> None:
        conn.sendall(b"this is not json\r\n")

    with pytest.raises(QMPError, match="cannot parse QEMU monitor reply"):
        QMPClient.from_socket(_peer(garbage), timeout=5)

    def not_qmp(conn: socket.socket) -> None:
        _send(conn, {"hello": "world"})

    with pytest.raises(QMPError, match="unexpected QMP greeting"):
        QMPClient.from_socket(_peer(not_qmp), timeout=5)


def test_quit_tolerates_qemu_closing_first() -> None:
    def closes(conn: socket.socket) -> None:
        _negotiate(conn)
        _recv_cmd(conn)  # QEMU may exit before its reply is written

    qmp = QMPClient.from_socket(_peer(closes), timeout=5)
    qmp.quit()
    assert qmp.closed


def test_connect_times_out_on_a_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(QMPError, match=r"monitor socket did not show up in 0\.1s"):
        QMPClient.connect(tmp_path / "absent.sock", timeout=0.1)
    # A path that exists but is no socket is a different, immediate error.
    (tmp_path / "file").write_text("")
    with pytest.raises(QMPError, match=r"failed to connect to monitor socket .*: not a socket"):
        QMPClient.connect(tmp_path / "file", timeout=5)
    assert not os.path.exists(tmp_path / "absent.sock")
