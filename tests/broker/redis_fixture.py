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


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yields ``redis://127.0.0.1:<port>/0`` once the server answers PING."""
    port = free_port()
    process = subprocess.Popen(
        [BINARY, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            assert process.poll() is None, f"redis-server on port {port} exited at start"
            assert time.monotonic() < deadline, f"redis-server on port {port} did not answer"
            time.sleep(0.02)  # polling a port: no event to await
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
