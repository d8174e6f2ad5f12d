"""Echo instances as separate processes registered in etcd, found by a client under
steady load: kill -9 of one, an etcd outage, and etcd back with empty data (the
scenarios are shared with NATS: registry_processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from etcd_support import EtcdServer
from registry_processes import (
    Spawn,
    kill_outage_and_empty_restart,
    one_registry_for_a_service_and_a_blocking_client,
    spawner,
)

from micro.registry.etcd import EtcdRegistry

pytestmark = pytest.mark.backend

NODE = Path(__file__).parent / "etcd_node.py"


@pytest.fixture
async def spawn(etcd_server: EtcdServer) -> AsyncIterator[Spawn]:
    async with spawner(NODE, etcd_server.endpoint) as start:
        yield start


async def test_three_processes_kill_outage_and_empty_restart(
    etcd_server: EtcdServer, spawn: Spawn, name: str
) -> None:
    # The lease runs out and etcd deletes the key; back empty, the services find
    # their leases gone and register again.
    await kill_outage_and_empty_restart(
        etcd_server, lambda: EtcdRegistry([etcd_server.endpoint]), spawn, name
    )


async def test_one_registry_for_a_service_and_a_blocking_client(
    etcd_server: EtcdServer, name: str
) -> None:
    await one_registry_for_a_service_and_a_blocking_client(
        EtcdRegistry([etcd_server.endpoint]), name
    )
