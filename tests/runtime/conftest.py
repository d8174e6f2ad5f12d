"""Runtime tests: services to call, a registry, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
from runtime_support import Echo, Start  # first: generates echo.proto, puts it on the path

import micro
from micro.registry import MemoryRegistry

CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def cluster(registry: MemoryRegistry) -> AsyncIterator[Start]:
    """``await cluster("echo", version="v1")`` starts one node and returns it with its
    handler; every node is stopped after the test."""
    started: list[micro.Service] = []

    async def start(
        name: str = "echo", *, version: str = "", metadata: Mapping[str, str] | None = None
    ) -> tuple[micro.Service, Echo]:
        svc = micro.Service(
            name, version=version, metadata=metadata, registry=registry, config=CONFIG
        )
        handler = Echo(svc.id, svc.client)
        svc.handle(handler)
        await svc.start()
        started.append(svc)
        return svc, handler

    yield start
    for svc in started:
        await svc.stop(grace=0)


@pytest.fixture
async def client(registry: MemoryRegistry) -> AsyncIterator[micro.Client]:
    c = micro.Client(registry, config=CONFIG)
    yield c
    await c.close()
