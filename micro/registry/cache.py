"""A caching registry: lookups are dict reads, kept fresh by one watch.

While the backend is unreachable the last known nodes keep being served (stale on
error); a log line says when that starts and when the backend is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from micro.registry.base import RETRY_WATCH, Event, EventType, Registry, RegistryError, Service

log = logging.getLogger("micro.registry")


class CachingRegistry:
    """Wraps any ``Registry``; ``cached(name)`` is the hot path of every call.

    ``generation`` changes whenever any cached service changes, so callers can keep
    derived views (filtered node lists) until it moves.
    """

    def __init__(self, backend: Registry) -> None:
        self.backend = backend
        self.generation = 0
        self._services: dict[str, list[Service]] = {}
        self._watch: asyncio.Task[None] | None = None
        self._stale = False

    def cached(self, name: str) -> list[Service] | None:
        return self._services.get(name)

    async def get_service(self, name: str) -> list[Service]:
        hit = self._services.get(name)
        if hit is not None:
            return hit
        return await self.refresh(name)

    async def refresh(self, name: str) -> list[Service]:
        """Ask the backend, whatever is cached: for a name the cache holds no node of,
        which the watch may have missed (an mDNS goodbye forged, an answer lost)."""
        self._ensure_watch()
        known = self._services.get(name)
        services = await self.backend.get_service(name)
        if self._services.get(name) is not known:  # the watch told newer news meanwhile
            return self._services[name]
        self._store(name, services)
        return services

    async def register(self, service: Service, ttl: float) -> None:
        await self.backend.register(service, ttl)

    async def deregister(self, service: Service) -> None:
        await self.backend.deregister(service)

    async def list_services(self) -> list[Service]:
        return await self.backend.list_services()

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        return self.backend.watch(service)

    async def unwatch(self) -> None:
        """Stop following the backend, leaving it open for its other users. The watch
        may run on another loop (a blocking client's thread): it is cancelled there."""
        task, self._watch = self._watch, None
        if task is None:
            return
        loop = task.get_loop()
        if loop is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    async def close(self) -> None:
        await self.unwatch()
        await self.backend.close()

    def _store(self, name: str, services: list[Service]) -> None:
        self._services[name] = services
        self.generation += 1

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            # Watch before the lookup that follows, not when the task first runs: a
            # change in between would otherwise be lost until the next resync.
            try:
                events: AsyncIterator[Event] | None = self.backend.watch()
            except RegistryError:
                events = None
            self._watch = asyncio.get_running_loop().create_task(self._follow(events))

    async def _follow(self, events: AsyncIterator[Event] | None) -> None:
        failures = 0
        while True:
            try:
                if events is None:
                    events = self.backend.watch()
                    if self._stale or failures:
                        await self._resync()
                async for event in events:
                    failures = 0
                    self._apply(event)
            except Exception as e:  # a backend's bug, too, must not end the watch for good
                if not self._stale:
                    bug = not isinstance(e, RegistryError)
                    log.warning("registry unreachable (%s): serving cached nodes", e, exc_info=bug)
                    self._stale = True
            events = None
            await asyncio.sleep(RETRY_WATCH[min(failures, len(RETRY_WATCH) - 1)])
            failures += 1

    async def _resync(self) -> None:
        for name in list(self._services):
            self._store(name, await self.backend.get_service(name))
        if self._stale:
            log.warning("registry reachable again: cache resynchronised")
            self._stale = False

    def _apply(self, event: Event) -> None:
        name = event.service.name
        services = self._services.get(name)
        if services is None:
            return
        (node,) = event.service.nodes
        kept = [s.with_nodes(tuple(n for n in s.nodes if n.id != node.id)) for s in services]
        if event.type is not EventType.DELETE:
            version = event.service.version
            for i, s in enumerate(kept):
                if s.version == version:
                    kept[i] = event.service.with_nodes((*s.nodes, node))
                    break
            else:
                kept.append(event.service)
        self._store(name, [s for s in kept if s.nodes])
