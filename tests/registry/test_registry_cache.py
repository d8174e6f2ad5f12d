"""CachingRegistry: lookups from the cache, kept current by one watch, served stale
while the backend is unreachable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest
from registry_support import nodes_by_version, service

from micro.registry import CachingRegistry, Event, MemoryRegistry, RegistryError, Service
from micro.registry import cache as cache_module

T = TypeVar("T")


class Flaky:
    """A backend that can be switched off, and tells what the cache did with it:
    ``looked_up`` gets every ``get_service``, ``watched`` every ``watch`` attempt and
    ``handled`` every event once the cache asked for the next one (it has applied it).
    Changes are made on ``inner``, which stays reachable, as the real one would."""

    def __init__(self, inner: MemoryRegistry) -> None:
        self.inner = inner
        self.down = False
        self.looked_up: asyncio.Queue[str] = asyncio.Queue()
        self.watched: asyncio.Queue[bool] = asyncio.Queue()
        self.handled: asyncio.Queue[Event] = asyncio.Queue()
        self.closed = False
        self._cut = asyncio.Event()

    def go_down(self) -> None:
        self.down = True
        self._cut.set()

    def come_back(self) -> None:
        self.down = False
        self._cut = asyncio.Event()

    def _check(self) -> None:
        if self.down:
            raise RegistryError("flaky backend at 127.0.0.1:1 is down")

    async def register(self, service: Service, ttl: float) -> None:
        self._check()
        await self.inner.register(service, ttl)

    async def deregister(self, service: Service) -> None:
        self._check()
        await self.inner.deregister(service)

    async def get_service(self, name: str) -> list[Service]:
        self.looked_up.put_nowait(name)
        self._check()
        return await self.inner.get_service(name)

    async def list_services(self) -> list[Service]:
        self._check()
        return await self.inner.list_services()

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        self.watched.put_nowait(not self.down)
        return self._follow(None if self.down else self.inner.watch(service), self._cut)

    async def _follow(
        self, events: AsyncIterator[Event] | None, cut: asyncio.Event
    ) -> AsyncIterator[Event]:
        if events is None:
            raise RegistryError("flaky backend at 127.0.0.1:1 is down")
        cutting = asyncio.ensure_future(cut.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(events))
                await asyncio.wait({following, cutting}, return_when=asyncio.FIRST_COMPLETED)
                if cutting.done():
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                    raise RegistryError("flaky backend at 127.0.0.1:1 went away")
                event = following.result()
                yield event
                self.handled.put_nowait(event)
        finally:
            cutting.cancel()
            await asyncio.gather(cutting, return_exceptions=True)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def inner() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def flaky(inner: MemoryRegistry) -> Flaky:
    return Flaky(inner)


@pytest.fixture
async def cache(flaky: Flaky, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CachingRegistry]:
    monkeypatch.setattr(cache_module, "RETRY_WATCH", (0.01,))
    cache = CachingRegistry(flaky)
    yield cache
    await cache.close()


async def wait(queue: asyncio.Queue[T], timeout: float = 2.0) -> T:
    return await asyncio.wait_for(queue.get(), timeout)


async def test_lookups_come_from_the_cache(
    cache: CachingRegistry, flaky: Flaky, inner: MemoryRegistry, name: str
) -> None:
    svc = service(name, "n1")
    await inner.register(svc, 30)
    assert cache.cached(name) is None
    assert await cache.get_service(name) == [svc]
    assert await cache.get_service(name) == [svc]
    assert cache.cached(name) == [svc]
    assert flaky.looked_up.qsize() == 1  # one lookup; the second was a dict read


async def test_misses_are_cached_too(cache: CachingRegistry, flaky: Flaky, name: str) -> None:
    assert await cache.get_service(name) == []
    assert await cache.get_service(name) == []
    assert flaky.looked_up.qsize() == 1


async def test_the_watch_keeps_the_cache_current(
    cache: CachingRegistry, flaky: Flaky, inner: MemoryRegistry, name: str
) -> None:
    await inner.register(service(name, "n1"), 30)
    await cache.get_service(name)
    generation = cache.generation

    # Right after the lookup, before the cache's task ever ran: not lost.
    await inner.register(service(name, "n2"), 30)
    await wait(flaky.handled)
    assert nodes_by_version(cache.cached(name) or []) == {"1.0": {"n1", "n2"}}
    assert cache.generation > generation

    await inner.register(service(name, "n2", version="2.0"), 30)
    await wait(flaky.handled)
    assert nodes_by_version(cache.cached(name) or []) == {"1.0": {"n1"}, "2.0": {"n2"}}

    await inner.deregister(service(name, "n1"))
    await wait(flaky.handled)
    assert nodes_by_version(cache.cached(name) or []) == {"2.0": {"n2"}}

    await inner.register(service(f"{name}-other", "x"), 30)  # not cached: ignored
    await wait(flaky.handled)
    assert cache.cached(f"{name}-other") is None
    assert flaky.looked_up.qsize() == 1


async def test_stale_while_unreachable_then_resynchronised(
    cache: CachingRegistry,
    flaky: Flaky,
    inner: MemoryRegistry,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "micro.registry")
    await inner.register(service(name, "n1"), 30)
    assert await cache.get_service(name) == [service(name, "n1")]
    assert await wait(flaky.watched) is True

    flaky.go_down()
    for _ in range(3):  # the watch broke; reconnecting keeps failing
        assert await wait(flaky.watched) is False
    await inner.register(service(name, "n2"), 30)  # a change it cannot see
    assert await cache.get_service(name) == [service(name, "n1")]  # the last known nodes
    unreachable = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1, unreachable  # once, not once per retry
    assert "127.0.0.1:1" in unreachable[0]

    flaky.come_back()
    while await wait(flaky.watched) is False:
        pass
    await inner.register(service(name, "n3"), 30)
    await wait(flaky.handled)  # the watch runs again; n2 came with the resync before it
    assert nodes_by_version(cache.cached(name) or []) == {"1.0": {"n1", "n2", "n3"}}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("reachable again" in m for m in messages) == 1, messages


async def test_first_lookup_fails_when_the_backend_is_down(
    cache: CachingRegistry, flaky: Flaky, name: str
) -> None:
    flaky.go_down()
    with pytest.raises(RegistryError, match=r"127\.0\.0\.1:1"):
        await cache.get_service(name)
    assert cache.cached(name) is None


async def test_unwatch_leaves_the_backend_open_and_close_closes_it(
    cache: CachingRegistry, flaky: Flaky, name: str
) -> None:
    await cache.get_service(name)
    await cache.unwatch()
    assert not flaky.closed
    await cache.close()
    assert flaky.closed


class Buggy(Flaky):
    """Its first watch fails with a bug (not a RegistryError), the next ones work."""

    def __init__(self, inner: MemoryRegistry) -> None:
        super().__init__(inner)
        self.bugs = 1

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        if self.bugs:
            self.bugs -= 1
            self.watched.put_nowait(False)
            return self._bug()
        return super().watch(service)

    async def _bug(self) -> AsyncIterator[Event]:
        raise ValueError("a bug in the backend")
        yield  # an async generator


async def test_a_backend_bug_does_not_end_the_watch(
    inner: MemoryRegistry,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(cache_module, "RETRY_WATCH", (0.01,))
    buggy = Buggy(inner)
    cache = CachingRegistry(buggy)
    await inner.register(service(name, "n1"), 30)
    assert await cache.get_service(name) == [service(name, "n1")]
    assert await wait(buggy.watched) is False  # the bug
    assert await wait(buggy.watched) is True  # watched again
    await inner.register(service(name, "n2"), 30)
    await wait(buggy.handled)
    assert nodes_by_version(cache.cached(name) or []) == {"1.0": {"n1", "n2"}}
    (record,) = [r for r in caplog.records if "a bug in the backend" in r.getMessage()]
    assert record.exc_info is not None  # logged with its traceback
    await cache.close()


class Slow(Flaky):
    """Answers lookups with what the backend held when asked (put on ``asked``), once
    ``answer`` is set: an answer the watch may overtake."""

    def __init__(self, inner: MemoryRegistry) -> None:
        super().__init__(inner)
        self.answer = asyncio.Event()
        self.asked: asyncio.Queue[list[Service]] = asyncio.Queue()

    async def get_service(self, name: str) -> list[Service]:
        found = await self.inner.get_service(name)
        self.asked.put_nowait(found)
        await self.answer.wait()
        return found


async def test_refresh_asks_the_backend_and_keeps_the_newer_news(
    inner: MemoryRegistry, name: str
) -> None:
    slow = Slow(inner)
    cache = CachingRegistry(slow)
    try:
        slow.answer.set()
        assert await cache.get_service(name) == []
        await inner.register(service(name, "missed"), 30)  # as if the watch missed it
        await wait(slow.handled)
        assert nodes_by_version(await cache.refresh(name)) == {"1.0": {"missed"}}
        await inner.deregister(service(name, "missed"))
        await wait(slow.handled)
        assert cache.cached(name) == []
        slow.answer.clear()
        while not slow.asked.empty():  # the earlier lookups' answers
            slow.asked.get_nowait()
        asking = asyncio.ensure_future(cache.refresh(name))
        assert await wait(slow.asked) == []  # what the backend holds, held back
        await inner.register(service(name, "n2"), 30)  # after the backend answered []
        await wait(slow.handled)  # the watch applied the newer news
        slow.answer.set()
        assert nodes_by_version(await asking) == {"1.0": {"n2"}}
        assert nodes_by_version(cache.cached(name) or []) == {"1.0": {"n2"}}
    finally:
        await cache.close()
