"""A real etcd cluster on loopback for the fleet tests and bench: members started and
stopped by pid, free ports picked at start, data under a temporary directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    ext = d / "ext.cnf"
    ext.write_text(
        "[server]\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
        "[client]\nextendedKeyUsage=clientAuth\n"
    )
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-extensions",
            name,
            "-out",
            f"{name}.pem",
        )
    return Certs(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (bound together, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Member:
    name: str
    client: int
    peer: int
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    scheme: str = "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client}"


@dataclass
class EtcdCluster:
    root: Path
    size: int = 3
    certs: Certs | None = None  # TLS with client certificates when given
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            self.members.append(
                Member(
                    f"m{i}",
                    ports[2 * i],
                    ports[2 * i + 1],
                    self.root / f"m{i}",
                    self.root / f"m{i}.log",
                    scheme="https" if self.certs else "http",
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _cmd(self, m: Member) -> list[str]:
        initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer}" for x in self.members)
        return [
            ETCD,
            "--name",
            m.name,
            "--data-dir",
            str(m.data),
            "--listen-client-urls",
            m.endpoint,
            "--advertise-client-urls",
            m.endpoint,
            "--listen-peer-urls",
            f"http://127.0.0.1:{m.peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{m.peer}",
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            f"svirt-test-{os.getpid()}-{self.members[0].client}",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--enable-v2=false",
            "--logger",
            "zap",
            "--log-level",
            "error",
            *(
                [
                    "--cert-file",
                    str(self.certs.server_cert),
                    "--key-file",
                    str(self.certs.server_key),
                    "--trusted-ca-file",
                    str(self.certs.ca),
                    "--client-cert-auth",
                ]
                if self.certs
                else []
            ),
        ]

    def start_member(self, m: Member) -> None:
        m.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(m.log, "ab") as log:
            m.proc = subprocess.Popen(
                self._cmd(m), stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )

    def start(self) -> EtcdCluster:
        for m in self.members:
            self.start_member(m)
        self.wait_leader()
        return self

    def status(self, m: Member) -> dict[str, object] | None:
        req = urllib.request.Request(
            f"{m.endpoint}/v3/maintenance/status", data=b"{}", method="POST"
        )
        ctx = None
        if self.certs is not None:
            ctx = ssl.create_default_context(cafile=str(self.certs.ca))
            ctx.load_cert_chain(str(self.certs.client_cert), str(self.certs.client_key))
        try:
            with urllib.request.urlopen(req, timeout=1.0, context=ctx) as resp:
                result: dict[str, object] = json.loads(resp.read())
                return result
        except (OSError, ValueError):
            return None

    def wait_leader(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [m for m in self.members if m.proc is not None and m.proc.poll() is None]
            if live and all(
                (st := self.status(m)) is not None and int(str(st.get("leader", 0))) != 0
                for m in live
            ):
                # A write through every live member proves the quorum answers.
                return
            time.sleep(0.05)
        logs = "\n".join(m.log.read_text(errors="replace")[-2000:] for m in self.members)
        raise RuntimeError(f"etcd cluster has no leader after {timeout}s:\n{logs}")

    def leader(self) -> Member:
        """The member the others follow now."""
        for m in self.members:
            st = self.status(m)
            header = st.get("header") if st else None
            if st and isinstance(header, dict) and header.get("member_id") == st.get("leader"):
                return m
        raise RuntimeError("no member is the leader")

    def kill(self, m: Member) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
        m.proc = None

    def restart(self, m: Member) -> None:
        cmd = self._cmd(m)
        # A member that has a data directory rejoins; the initial-cluster flags are ignored.
        with open(m.log, "ab") as log:
            m.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        # The data is thrown away: no graceful shutdown (leader transfer) to wait for.
        for m in self.members:
            self.kill(m)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
