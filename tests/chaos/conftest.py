"""Chaos scenarios: each test gets its own processes (and nats-server when it needs
one), all stopped by PID afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from chaos_support import Processes
from nats_support import NatsServer, running


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    await procs.close()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with running(tmp_path) as server:
        yield server


@pytest.fixture
def name() -> str:
    """A service name no other test (or machine on the loopback mDNS) uses."""
    return f"chaos-{uuid.uuid4().hex[:12]}"
