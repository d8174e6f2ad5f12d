"""What every registry backend that takes registrations promises, written once and
run by each backend's tests: memory, mDNS, etcd and NATS KV.

The ``test_*`` functions here are the contract itself: each backend's test module
imports them (``from registry_contract import *``), and pytest runs them there with
that module's ``backend`` fixture (a ``Backend``) and ``name`` fixture (a service name
unique to the test). The ``check_*`` functions are called by the tests of the
backends they apply to.

Registries from ``backend.open()`` are separate instances on one store, as separate
processes would have them, so a change made through one reaches another over the
backend's own path. Every change is awaited as a watch event, never slept for; only
the TTL tests let real time pass, since time passing is what they are about.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

import pytest
from registry_support import next_event, nodes_by_version, service, summary

from micro.registry import Event, EventType, Node, Registry, RegistryError, Service

__all__ = [  # the contract: ``from registry_contract import *`` runs it in a backend's module
    "test_a_name_that_prefixes_another_is_another_service",
    "test_a_node_can_move_to_another_version",
    "test_an_unknown_service_is_empty",
    "test_close_leaves_registered_nodes_to_expire",
    "test_deregistering_an_unknown_node_changes_nothing",
    "test_lookup_returns_what_was_registered",
    "test_names_outside_any_key_charset",
    "test_node_expires_when_not_registered_again",
    "test_one_registry_serves_several_event_loops",
    "test_registering_again_keeps_the_node",
    "test_versions_are_grouped",
    "test_watch_filters_by_service",
    "test_watch_reports_each_change_with_one_node",
    "test_watch_sees_changes_made_right_after_it_is_called",
]

C, U, D = EventType.CREATE, EventType.UPDATE, EventType.DELETE
# Seconds one expected change may take to reach a watcher: a guard against a hang
# (a change arrives in milliseconds), not a measure.
WAIT = 10.0


class FakeClock:
    """Time for ``MemoryRegistry``: it moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """How the contract reaches one backend."""

    open: Callable[[], Registry]  # another instance on the same store, closed after the test
    ttl: float  # a short TTL the backend keeps as given (etcd, NATS: whole seconds)
    clock: FakeClock | None = None  # memory's clock; real time for the others

    def now(self) -> float:
        return time.monotonic() if self.clock is None else self.clock.now

    async def pass_time(self, seconds: float) -> None:
        if self.clock is None:
            await asyncio.sleep(seconds)  # real time passing is what is under test
        else:
            self.clock.now += seconds

    async def lapse(self, reader: Registry, ttl: float | None = None) -> None:
        """Let ``ttl`` (default: ``self.ttl``) run out for what is registered now.
        The networked backends expire entries by themselves (the caller awaits
        that); memory's clock is moved, and it expires entries when next used."""
        if self.clock is not None:
            self.clock.now += self.ttl if ttl is None else ttl
            await reader.list_services()


async def watching(registry: Registry, name: str | None = None) -> AsyncIterator[Event]:
    """``registry.watch(name)``, started: calls made after ``watch`` wait until it has
    read the store (etcd, NATS) or browse from then on (mDNS), so a change made from
    now on, through any instance, reaches it."""
    events = registry.watch(name)
    await registry.list_services()
    return events


async def next_of(events: AsyncIterator[Event], *names: str) -> Event:
    """The next event about one of ``names``: a watch of everything on mDNS also
    hears other tests' services on this host."""

    async def first() -> Event:
        async for event in events:
            if event.service.name in names:
                return event
        raise AssertionError("the watch ended")

    return await asyncio.wait_for(first(), WAIT)


def ids(services: list[Service]) -> list[str]:
    return sorted(n.id for s in services for n in s.nodes)


def sorted_nodes(svc: Service) -> Service:
    return replace(svc, nodes=tuple(sorted(svc.nodes, key=lambda n: n.id)))


async def test_lookup_returns_what_was_registered(backend: Backend, name: str) -> None:
    """Every field travels; several nodes in one call come and go one event each."""
    reader, writer = backend.open(), backend.open()
    events = await watching(reader, name)
    svc = service(name, "n1", "n2", metadata={"team": "core", "tier": "gold"})
    await writer.register(svc, 30)
    created = {summary(await next_event(events, WAIT)) for _ in range(2)}
    assert created == {(C, name, ("n1",)), (C, name, ("n2",))}
    (found,) = await reader.get_service(name)
    assert sorted_nodes(found) == svc
    assert name in {s.name for s in await reader.list_services()}

    await writer.deregister(svc)
    deleted = {summary(await next_event(events, WAIT)) for _ in range(2)}
    assert deleted == {(D, name, ("n1",)), (D, name, ("n2",))}
    assert await reader.get_service(name) == []
    assert name not in {s.name for s in await reader.list_services()}


async def test_versions_are_grouped(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    events = await watching(reader, name)
    await writer.register(service(name, "a1", "a2", version="1.0"), 30)
    await writer.register(service(name, "b1", version="2.0"), 30)
    for _ in range(3):
        assert (await next_event(events, WAIT)).type is C
    expected = {"1.0": {"a1", "a2"}, "2.0": {"b1"}}
    assert nodes_by_version(await reader.get_service(name)) == expected
    listed = [s for s in await reader.list_services() if s.name == name]
    assert nodes_by_version(listed) == expected


async def test_an_unknown_service_is_empty(backend: Backend, name: str) -> None:
    """While others are registered: a lookup answers for the name asked, only."""
    reader, writer = backend.open(), backend.open()
    other = f"{name}-other"
    events = await watching(reader)
    await writer.register(service(name, "n1"), 30)
    await writer.register(service(other, "n2"), 30)
    assert summary(await next_of(events, name, other)) == (C, name, ("n1",))
    assert summary(await next_of(events, name, other)) == (C, other, ("n2",))
    await check_lookups_answer_for_the_name_asked(reader, {name: {"n1"}, other: {"n2"}})


async def test_deregistering_an_unknown_node_changes_nothing(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    events = await watching(reader, name)
    await writer.register(service(name, "n1"), 30)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    await writer.deregister(service(name, "never-registered"))
    await writer.deregister(service(f"{name}-never", "n1"))  # the same id, another service
    await writer.register(service(name, "n2"), 30)
    # Had a deregistration removed n1, its DELETE would come before this.
    assert summary(await next_event(events, WAIT)) == (C, name, ("n2",))
    assert nodes_by_version(await reader.get_service(name)) == {"1.0": {"n1", "n2"}}


async def test_watch_reports_each_change_with_one_node(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    await writer.register(service(f"{name}-other", "x"), 30)  # not this watch's service
    events = await watching(reader, name)
    first = service(name, "n1")
    await writer.register(first, 30)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))

    await writer.register(first, 30)  # unchanged: no event...
    await writer.register(service(name, "n2"), 30)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n2",))  # ...before this

    moved = first.with_nodes((Node("n1", "127.0.0.1:1", {"zone": "b"}),))
    await writer.register(moved, 30)
    event = await next_event(events, WAIT)
    assert summary(event) == (U, name, ("n1",))
    assert event.service == moved

    relabelled = replace(moved, metadata={"team": "edge"}, endpoints=moved.endpoints[:1])
    await writer.register(relabelled, 30)
    event = await next_event(events, WAIT)
    assert summary(event) == (U, name, ("n1",))
    assert event.service == relabelled

    await writer.deregister(relabelled)
    event = await next_event(events, WAIT)
    assert summary(event) == (D, name, ("n1",))
    assert nodes_by_version(await reader.get_service(name)) == {"1.0": {"n2"}}


async def test_watch_filters_by_service(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    other = f"{name}-other"
    mine, everything = await watching(reader, name), await watching(reader)
    await writer.register(service(other, "x"), 30)
    await writer.register(service(name, "n1"), 30)
    assert summary(await next_event(mine, WAIT)) == (C, name, ("n1",))
    # In the order they happened.
    assert summary(await next_of(everything, name, other)) == (C, other, ("x",))
    assert summary(await next_of(everything, name, other)) == (C, name, ("n1",))


async def test_watch_sees_changes_made_right_after_it_is_called(
    backend: Backend, name: str
) -> None:
    registry = backend.open()
    events = registry.watch(name)
    await registry.register(service(name, "n1"), 30)  # nothing awaited the watch yet
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))


async def test_node_expires_when_not_registered_again(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    events = await watching(reader, name)
    registered = backend.now()
    await writer.register(service(name, "n1"), backend.ttl)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    await backend.lapse(reader)
    assert summary(await next_event(events, backend.ttl + WAIT)) == (D, name, ("n1",))
    lived = backend.now() - registered
    assert lived >= backend.ttl, f"gone {lived:.2f} s after registering, TTL {backend.ttl} s"
    assert await reader.get_service(name) == []


async def test_registering_again_keeps_the_node(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    events = await watching(reader, name)
    svc = service(name, "n1")
    ttl = 2 * backend.ttl
    await writer.register(svc, ttl)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    for _ in range(6):  # 1.5 TTL in all; a refresh may be 3/4 of a TTL late
        await backend.pass_time(ttl / 4)
        await writer.register(svc, ttl)
    assert await reader.get_service(name) == [svc]
    # Had it expired in between, or a refresh been reported, that would come first.
    await writer.register(service(name, "n2"), ttl)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n2",))


async def test_close_leaves_registered_nodes_to_expire(backend: Backend, name: str) -> None:
    """No goodbye at close: deregistering is the lifecycle's own step."""
    reader, writer = backend.open(), backend.open()
    events = await watching(reader, name)
    ttl = 2 * backend.ttl
    registered = backend.now()
    await writer.register(service(name, "n1"), ttl)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    await writer.close()
    await backend.lapse(reader, ttl)
    assert summary(await next_event(events, ttl + WAIT)) == (D, name, ("n1",))
    # Removed by the close, it would have gone at once, not a TTL on.
    lived = backend.now() - registered
    assert lived >= ttl, f"gone {lived:.2f} s after registering, TTL {ttl} s"


async def test_a_node_can_move_to_another_version(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    events = await watching(reader, name)
    old = service(name, "n1", "n2", version="1.0")
    await writer.register(old, 30)
    for _ in range(2):
        await next_event(events, WAIT)
    upgraded = replace(old, version="2.0", nodes=(Node("n1", "127.0.0.1:50000", {"zone": "a"}),))
    await writer.register(upgraded, 30)
    event = await next_event(events, WAIT)
    assert summary(event) == (U, name, ("n1",))
    assert event.service.version == "2.0"
    grouped = nodes_by_version(await reader.get_service(name))
    assert grouped == {"1.0": {"n2"}, "2.0": {"n1"}}


async def test_a_name_that_prefixes_another_is_another_service(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    sub = f"{name}/sub"
    events = await watching(reader, name)
    await writer.register(service(sub, "n2"), 30)
    await writer.register(service(name, "n1"), 30)
    # The watch of ``name`` skipped ``name/sub``'s node.
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    assert nodes_by_version(await reader.get_service(name)) == {"1.0": {"n1"}}
    assert nodes_by_version(await reader.get_service(sub)) == {"1.0": {"n2"}}


async def test_names_outside_any_key_charset(backend: Backend, name: str) -> None:
    reader, writer = backend.open(), backend.open()
    odd = f"grüße/Ω {name}.*>"
    events = await watching(reader, odd)
    svc = service(odd, "node id with spaces.*")
    await writer.register(svc, 30)
    assert summary(await next_event(events, WAIT)) == (C, odd, ("node id with spaces.*",))
    assert await reader.get_service(odd) == [svc]


async def test_one_registry_serves_several_event_loops(backend: Backend, name: str) -> None:
    """A service's loop and a blocking client's loop thread share one registry."""
    registry = backend.open()
    svc = service(name, "n1")
    ready = threading.Event()

    def client_thread() -> tuple[Event, list[Service]]:
        async def client() -> tuple[Event, list[Service]]:
            events = await watching(registry, name)  # from this thread's loop
            ready.set()
            event = await next_event(events, WAIT)
            return event, await registry.get_service(name)

        return asyncio.run(client())

    other = asyncio.ensure_future(asyncio.to_thread(client_thread))
    assert await asyncio.to_thread(ready.wait, WAIT)
    await registry.register(svc, 30)
    event, seen = await asyncio.wait_for(other, WAIT)
    assert summary(event) == (C, name, ("n1",))
    assert seen == [svc]
    assert await registry.get_service(name) == [svc]


async def check_lookups_answer_for_the_name_asked(
    registry: Registry, published: Mapping[str, set[str]]
) -> None:
    """For every registry, read-only ones (DNS) too: each of the ``published`` names
    gives its own node ids, and a name beside them that is not published, none."""
    for name, node_ids in published.items():
        assert ids(await registry.get_service(name)) == sorted(node_ids)
    assert await registry.get_service(f"{min(published)}-absent") == []


async def check_close_ends_watches_and_later_calls_say_so(registry: Registry, name: str) -> None:
    """For backends holding connections (mDNS, etcd, NATS); memory's ``close`` has
    nothing to release."""
    events = await watching(registry, name)
    waiting = asyncio.ensure_future(anext(events))
    await registry.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, WAIT)
    with pytest.raises(RegistryError, match="closed"):
        await registry.get_service(name)
    with pytest.raises(RegistryError, match="closed"):
        await registry.register(service(name, "n1"), 30)
    await registry.close()  # again: nothing happens


async def check_garbage_entries_are_skipped(
    registry: Registry,
    name: str,
    caplog: pytest.LogCaptureFixture,
    *,
    where: str,
    key: Callable[[str], str],
    put: Callable[[str, bytes], Awaitable[None]],
    more: Mapping[str, tuple[bytes, str]] = {},
) -> None:
    """For stores other programs write to (etcd, NATS KV): a value that is not an
    entry is skipped with a warning naming ``where``, its key and what is wrong, and
    the watch, lookups and listings go on past it. ``key(node)`` is where a node of
    ``name`` is kept, ``put`` writes a raw value, ``more`` is the store's own garbage
    (key: value and the reason warned)."""
    garbage = {
        key("bad1"): (b"{not json", "not JSON"),
        key("bad2"): (b'{"name": "x"}', "'node' is missing or not an object"),
        # The probe's value: 200 KB of "[" made the JSON parser recurse to death.
        key("deep"): (
            b"[" * 200_000,
            "not JSON: brackets unbalanced or nested more than 16 deep",
        ),
        **more,
    }
    await registry.register(service(name, "good"), 30)
    events = await watching(registry)
    with caplog.at_level(logging.WARNING):
        for garbage_key, (value, _) in garbage.items():
            await put(garbage_key, value)
        await registry.register(service(name, "good2"), 30)
        assert summary(await next_event(events, WAIT)) == (C, name, ("good2",))
        assert nodes_by_version(await registry.get_service(name)) == {"1.0": {"good", "good2"}}
        assert {s.name for s in await registry.list_services()} == {name}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for garbage_key, (_, reason) in garbage.items():
        expected = f"{where}: skipping malformed entry {garbage_key!r}: {reason}"
        assert any(w.startswith(expected) for w in warned), (expected, warned)
