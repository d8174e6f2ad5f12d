"""An in-process registry: for tests and single-process setups.

Safe to share between event loops and threads (a sync client's loop and a service's),
so its watches are fed across threads (``micro.registry.feed``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from micro.registry.base import Event, EventType, Service, group
from micro.registry.feed import Feed, Feeds


@dataclass
class _Entry:
    service: Service  # carries exactly one node
    expires: float


class MemoryRegistry:
    """``Registry`` kept in a dict; TTLs expire against ``clock`` (injectable)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._watches = Feeds()

    async def register(self, service: Service, ttl: float) -> None:
        events = []
        with self._lock:
            expires = self._clock() + ttl
            for node in service.nodes:
                key = (service.name, node.id)
                one = service.with_nodes((node,))
                old = self._entries.get(key)
                self._entries[key] = _Entry(one, expires)
                if old is None:
                    events.append(Event(EventType.CREATE, one))
                elif old.service != one:
                    events.append(Event(EventType.UPDATE, one))
            events += self._sweep()
        self._watches.notify(events)

    async def deregister(self, service: Service) -> None:
        events = []
        with self._lock:
            for node in service.nodes:
                old = self._entries.pop((service.name, node.id), None)
                if old is not None:
                    events.append(Event(EventType.DELETE, old.service))
            events += self._sweep()
        self._watches.notify(events)

    async def get_service(self, name: str) -> list[Service]:
        return [s for s in self._services() if s.name == name]

    async def list_services(self) -> list[Service]:
        return self._services()

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        """Changes from this call on, not from the first ``__anext__``: a caller that
        watches and then looks up (``CachingRegistry`` resyncing) misses nothing."""
        feed = self._watches.add(service)
        events = self._follow(feed)
        # A watch dropped before it was ever iterated never runs its ``finally``.
        weakref.finalize(events, self._watches.remove, feed)
        return events

    async def _follow(self, feed: Feed) -> AsyncIterator[Event]:
        """The feed's events, and on the way the expiry of nodes whose TTL ran out."""
        try:
            while True:
                # Not asyncio.wait_for: before Python 3.12 it can swallow a cancellation
                # that races with an event, and the watch would never end.
                getter = asyncio.ensure_future(feed.queue.get())
                try:
                    await asyncio.wait({getter}, timeout=self._until_expiry())
                finally:
                    getter.cancel()
                if not getter.done() or getter.cancelled():
                    self._expire()
                elif isinstance(event := getter.result(), Event):
                    yield event
                else:
                    return
        finally:
            self._watches.remove(feed)

    async def close(self) -> None:
        pass

    def _services(self) -> list[Service]:
        self._expire()
        with self._lock:
            return group([entry.service for entry in self._entries.values()])

    def _expire(self) -> None:
        with self._lock:
            events = self._sweep()
        self._watches.notify(events)

    def _sweep(self) -> list[Event]:
        now = self._clock()
        dead = [key for key, entry in self._entries.items() if entry.expires <= now]
        return [Event(EventType.DELETE, self._entries.pop(key).service) for key in dead]

    def _until_expiry(self) -> float | None:
        with self._lock:
            if not self._entries:
                return None
            return max(0.0, min(e.expires for e in self._entries.values()) - self._clock())


_shared: list[MemoryRegistry] = []
_shared_lock = threading.Lock()


def shared() -> MemoryRegistry:
    """The one registry ``MICRO_REGISTRY=memory`` means in this process, so services
    and clients built from the environment find each other."""
    with _shared_lock:
        if not _shared:
            _shared.append(MemoryRegistry())
        return _shared[0]
