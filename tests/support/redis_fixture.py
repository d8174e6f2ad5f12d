"""A redis-server of the test's own: loopback, a free port, no persistence; stopped
by PID. Used by the Redis broker tests and by ``bench/broker_redis.py``."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"


def available() -> bool:
    return shutil.which(BINARY) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on a port of its own; ``start`` again after ``stop``
    gives an empty server on the same address (nothing is persisted)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port"]
        self.process = subprocess.Popen(
            [BINARY, *args, str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            assert self.process.poll() is None, f"redis-server on port {self.port} exited at start"
            assert time.monotonic() < deadline, f"redis-server on port {self.port} did not answer"
            time.sleep(0.02)  # polling a port: no event to await

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yields ``redis://127.0.0.1:<port>/0`` once the server answers PING."""
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
