"""Echo instances as separate processes registered in NATS KV, found by a client
under steady load: kill -9 of one, a nats-server outage, and nats-server back with an
empty store (the scenarios are shared with etcd: registry_processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats_support import NatsServer
from registry_processes import (
    Spawn,
    kill_outage_and_empty_restart,
    one_registry_for_a_service_and_a_blocking_client,
    spawner,
)

from micro.registry.nats import NatsRegistry

pytestmark = pytest.mark.backend

NODE = Path(__file__).parent / "nats_node.py"


@pytest.fixture
async def spawn(nats_server: NatsServer) -> AsyncIterator[Spawn]:
    async with spawner(NODE, nats_server.url) as start:
        yield start


async def test_three_processes_kill_outage_and_empty_restart(
    nats_server: NatsServer, spawn: Spawn, name: str
) -> None:
    await kill_outage_and_empty_restart(
        nats_server, lambda: NatsRegistry([nats_server.url]), spawn, name
    )


async def test_one_registry_for_a_service_and_a_blocking_client(
    nats_server: NatsServer, name: str
) -> None:
    await one_registry_for_a_service_and_a_blocking_client(NatsRegistry([nats_server.url]), name)
