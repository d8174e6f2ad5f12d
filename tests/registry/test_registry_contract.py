"""What every ``Registry`` backend promises, run against each backend.

For memory, time is an injected clock (no sleeps); for mDNS the writer and the reader
are separate instances, each with its own sockets, so lookups go over the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from registry_support import next_event, nodes_by_version, service, summary

from micro.registry import EventType, MdnsRegistry, MemoryRegistry, Node, Registry

C, U, D = EventType.CREATE, EventType.UPDATE, EventType.DELETE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    writer: Registry
    reader: Registry
    ttl: float  # a TTL to let lapse
    wait: float  # bound for a change to reach the reader
    clock: FakeClock | None = None

    async def pass_time(self, seconds: float) -> None:
        if self.clock is None:
            await asyncio.sleep(seconds)  # real time is what is under test here
        else:
            self.clock.now += seconds

    async def lapse(self) -> None:
        """Let ``ttl`` run out. Memory expires on access, so look; mDNS expires by
        itself, which the caller's wait bound covers."""
        if self.clock is not None:
            self.clock.now += self.ttl
            await self.reader.list_services()


@pytest.fixture(params=["memory", "mdns"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryRegistry(clock=clock)
        yield Backend(memory, memory, ttl=30.0, wait=1.0, clock=clock)
        return
    request.applymarker(pytest.mark.backend)
    request.getfixturevalue("multicast")
    writer, reader = MdnsRegistry(), MdnsRegistry()
    try:
        await reader.list_services()  # browsing: changes from now on reach it
        yield Backend(writer, reader, ttl=1.0, wait=1.0)
    finally:
        await writer.close()
        await reader.close()


async def test_lookup_returns_what_was_registered(backend: Backend, name: str) -> None:
    svc = service(name, "n1", metadata={"team": "core", "tier": "gold"})
    watch = backend.reader.watch(name)
    await backend.writer.register(svc, 30)
    await next_event(watch, backend.wait)
    assert await backend.reader.get_service(name) == [svc]


async def test_versions_are_grouped(backend: Backend, name: str) -> None:
    watch = backend.reader.watch(name)
    await backend.writer.register(service(name, "a1", "a2", version="1.0"), 30)
    await backend.writer.register(service(name, "b1", version="2.0"), 30)
    for _ in range(3):
        assert (await next_event(watch, backend.wait)).type is C
    expected = {"1.0": {"a1", "a2"}, "2.0": {"b1"}}
    assert nodes_by_version(await backend.reader.get_service(name)) == expected
    listed = [s for s in await backend.reader.list_services() if s.name == name]
    assert nodes_by_version(listed) == expected


async def test_unknown_service_is_empty(backend: Backend, name: str) -> None:
    assert await backend.reader.get_service(name) == []


async def test_watch_reports_each_change_with_one_node(backend: Backend, name: str) -> None:
    watch = backend.reader.watch(name)
    first = service(name, "n1")
    await backend.writer.register(first, 30)
    assert summary(await next_event(watch, backend.wait)) == (C, name, ("n1",))

    await backend.writer.register(first, 30)  # unchanged: no event...
    await backend.writer.register(service(name, "n2"), 30)
    assert summary(await next_event(watch, backend.wait)) == (C, name, ("n2",))  # ...before this

    moved = service(name, "n1", node_metadata={"zone": "b"})
    await backend.writer.register(moved, 30)
    event = await next_event(watch, backend.wait)
    assert summary(event) == (U, name, ("n1",))
    assert event.service == moved

    await backend.writer.deregister(moved)
    event = await next_event(watch, backend.wait)
    assert summary(event) == (D, name, ("n1",))
    assert nodes_by_version(await backend.reader.get_service(name)) == {"1.0": {"n2"}}


async def test_watch_filters_by_service(backend: Backend, name: str) -> None:
    other = f"{name}-other"
    mine, everything = backend.reader.watch(name), backend.reader.watch()
    await backend.writer.register(service(other, "x"), 30)
    await backend.writer.register(service(name, "n1"), 30)
    assert summary(await next_event(mine, backend.wait)) == (C, name, ("n1",))

    async def both() -> list[str]:
        seen: list[str] = []
        async for event in everything:  # other services on the host may come and go
            if event.service.name in (name, other):
                seen.append(event.service.name)
            if len(seen) == 2:
                return seen

        raise AssertionError("the watch ended")

    assert await asyncio.wait_for(both(), backend.wait) == [other, name]


async def test_watch_sees_changes_made_before_it_is_iterated(backend: Backend, name: str) -> None:
    watch = backend.reader.watch(name)
    await backend.writer.register(service(name, "n1"), 30)  # nothing awaited the watch yet
    assert summary(await next_event(watch, backend.wait)) == (C, name, ("n1",))


async def test_several_nodes_in_one_call(backend: Backend, name: str) -> None:
    watch = backend.reader.watch(name)
    both = service(name, "n1", "n2")
    await backend.writer.register(both, 30)
    created = {summary(await next_event(watch, backend.wait)) for _ in range(2)}
    assert created == {(C, name, ("n1",)), (C, name, ("n2",))}
    await backend.writer.deregister(both)
    deleted = {summary(await next_event(watch, backend.wait)) for _ in range(2)}
    assert deleted == {(D, name, ("n1",)), (D, name, ("n2",))}
    assert await backend.reader.get_service(name) == []


async def test_deregister_removes_at_once(backend: Backend, name: str) -> None:
    svc = service(name, "n1")
    watch = backend.reader.watch(name)
    await backend.writer.register(svc, 30)
    await next_event(watch, backend.wait)
    await backend.writer.deregister(svc)
    assert (await next_event(watch, backend.wait)).type is D
    assert await backend.reader.get_service(name) == []


async def test_deregister_of_unknown_node_is_harmless(backend: Backend, name: str) -> None:
    await backend.writer.deregister(service(name, "never-registered"))
    assert await backend.reader.get_service(name) == []


async def test_node_expires_when_not_registered_again(backend: Backend, name: str) -> None:
    watch = backend.reader.watch(name)
    await backend.writer.register(service(name, "n1"), backend.ttl)
    await next_event(watch, backend.wait)
    await backend.lapse()
    event = await next_event(watch, backend.ttl + backend.wait)
    assert summary(event) == (D, name, ("n1",))
    assert await backend.reader.get_service(name) == []


async def test_registering_again_keeps_the_node(backend: Backend, name: str) -> None:
    svc = service(name, "n1")
    watch = backend.reader.watch(name)
    await backend.writer.register(svc, backend.ttl)
    await next_event(watch, backend.wait)
    for _ in range(3):
        await backend.pass_time(backend.ttl * 0.6)
        await backend.writer.register(svc, backend.ttl)
    assert await backend.reader.get_service(name) == [svc]
    # Had it expired in between, the DELETE (and CREATE) would come before this one.
    await backend.writer.register(service(name, "n2"), backend.ttl)
    assert summary(await next_event(watch, backend.wait)) == (C, name, ("n2",))


async def test_a_node_can_move_to_another_version(backend: Backend, name: str) -> None:
    watch = backend.reader.watch(name)
    old = service(name, "n1", "n2", version="1.0")
    await backend.writer.register(old, 30)
    for _ in range(2):
        await next_event(watch, backend.wait)
    upgraded = replace(old, version="2.0", nodes=(Node("n1", "127.0.0.1:50000", {"zone": "a"}),))
    await backend.writer.register(upgraded, 30)
    event = await next_event(watch, backend.wait)
    assert summary(event) == (U, name, ("n1",))
    assert event.service.version == "2.0"
    grouped = nodes_by_version(await backend.reader.get_service(name))
    assert grouped == {"1.0": {"n2"}, "2.0": {"n1"}}
