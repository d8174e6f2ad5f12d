"""MemoryRegistry: the registry contract, on a clock the tests move."""

from __future__ import annotations

import asyncio

import pytest
from registry_contract import *  # noqa: F403  (the contract every backend passes, run here)
from registry_contract import WAIT, Backend, FakeClock, watching
from registry_support import next_event, service, summary

from micro.registry import EventType, MemoryRegistry


@pytest.fixture
def backend() -> Backend:
    clock = FakeClock()
    memory = MemoryRegistry(clock=clock)
    return Backend(lambda: memory, ttl=30.0, clock=clock)  # one store: the process's


async def test_close_releases_nothing(backend: Backend, name: str) -> None:
    """Services and clients of one process share the registry
    (``MICRO_REGISTRY=memory``): one of them closing it ends nobody's watch."""
    registry = backend.open()
    events = await watching(registry, name)
    await registry.close()
    await registry.register(service(name, "n1"), 30)
    assert summary(await next_event(events, WAIT)) == (EventType.CREATE, name, ("n1",))


async def test_a_node_lives_exactly_its_ttl(backend: Backend, name: str) -> None:
    """On the injected clock, to the instant (the contract can only see real time
    pass on the networked backends)."""
    assert backend.clock is not None
    registry = backend.open()
    await registry.register(service(name, "n1"), 30)
    backend.clock.now += 29.999
    assert [n.id for s in await registry.get_service(name) for n in s.nodes] == ["n1"]
    backend.clock.now += 0.001
    assert await registry.get_service(name) == []


async def test_a_watch_on_a_loop_that_ended_stops_nobody(backend: Backend, name: str) -> None:
    """A blocking client's loop thread watched and ended without closing its watch:
    registering still works, and the other watches still hear of it."""
    registry = backend.open()
    left: list[object] = []

    async def watch_and_leave() -> None:
        left.append(registry.watch(name))  # made on this loop, kept, never closed

    await asyncio.to_thread(asyncio.run, watch_and_leave())  # that loop is closed after
    events = await watching(registry, name)
    await registry.register(service(name, "n1"), 30)
    assert summary(await next_event(events, WAIT)) == (EventType.CREATE, name, ("n1",))
