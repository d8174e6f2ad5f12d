"""An in-process registry: for tests and single-process setups.

Safe to share between event loops and threads (a sync client's loop and a service's),
so watchers are woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from micro.registry.base import Event, EventType, Service, group


@dataclass
class _Entry:
    service: Service  # carries exactly one node
    expires: float


@dataclass(frozen=True)
class _Watcher:
    service: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]


class MemoryRegistry:
    """``Registry`` kept in a dict; TTLs expire against ``clock`` (injectable)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._watchers: list[_Watcher] = []

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
        self._notify(events)

    async def deregister(self, service: Service) -> None:
        events = []
        with self._lock:
            for node in service.nodes:
                old = self._entries.pop((service.name, node.id), None)
                if old is not None:
                    events.append(Event(EventType.DELETE, old.service))
            events += self._sweep()
        self._notify(events)

    async def get_service(self, name: str) -> list[Service]:
        return [s for s in self._services() if s.name == name]

    async def list_services(self) -> list[Service]:
        return self._services()

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        """Changes from this call on, not from the first ``__anext__``: a caller that
        watches and then looks up (``CachingRegistry`` resyncing) misses nothing."""
        watcher = _Watcher(service, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            self._watchers.append(watcher)
        events = self._follow(watcher)
        # A watch dropped before it was ever iterated never runs its ``finally``.
        weakref.finalize(events, self._unwatch, watcher)
        return events

    async def _follow(self, watcher: _Watcher) -> AsyncIterator[Event]:
        try:
            while True:
                # Not asyncio.wait_for: before Python 3.12 it can swallow a cancellation
                # that races with an event, and the watch would never end.
                getter = asyncio.ensure_future(watcher.queue.get())
                try:
                    await asyncio.wait({getter}, timeout=self._until_expiry())
                finally:
                    getter.cancel()
                if getter.done() and not getter.cancelled():
                    yield getter.result()
                else:
                    self._expire()
        finally:
            self._unwatch(watcher)

    def _unwatch(self, watcher: _Watcher) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._watchers.remove(watcher)

    async def close(self) -> None:
        pass

    def _services(self) -> list[Service]:
        self._expire()
        with self._lock:
            return group([entry.service for entry in self._entries.values()])

    def _expire(self) -> None:
        with self._lock:
            events = self._sweep()
        self._notify(events)

    def _sweep(self) -> list[Event]:
        now = self._clock()
        dead = [key for key, entry in self._entries.items() if entry.expires <= now]
        return [Event(EventType.DELETE, self._entries.pop(key).service) for key in dead]

    def _until_expiry(self) -> float | None:
        with self._lock:
            if not self._entries:
                return None
            return max(0.0, min(e.expires for e in self._entries.values()) - self._clock())

    def _notify(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            watchers = list(self._watchers)
        for w in watchers:
            for event in events:
                if w.service is None or w.service == event.service.name:
                    w.loop.call_soon_threadsafe(w.queue.put_nowait, event)


_shared: list[MemoryRegistry] = []
_shared_lock = threading.Lock()


def shared() -> MemoryRegistry:
    """The one registry ``MICRO_REGISTRY=memory`` means in this process, so services
    and clients built from the environment find each other."""
    with _shared_lock:
        if not _shared:
            _shared.append(MemoryRegistry())
        return _shared[0]
