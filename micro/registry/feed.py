"""Watch events across threads: put by whichever thread sees a change (a backend's
private loop, zeroconf's loop, any caller of an in-process registry) and read on the
loop of the caller who watches.

``Feed`` is one watch; ``Feeds`` the watches of a registry whose table changes on
any thread (memory, mDNS): each change goes to the watches of its service.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable

from micro.registry.base import Event, RegistryError


def _nothing() -> None:
    pass


class Feed:
    """One watch's events, read on the loop running when the ``Feed`` is made.

    ``events()`` iterates them: ``None`` ends it, an exception is raised there as a
    ``RegistryError`` (``failure`` says whose), and ``on_drop`` runs when it is
    closed, ends or is dropped unstarted; it may run on any thread.
    """

    def __init__(
        self,
        service: str | None = None,
        *,
        on_drop: Callable[[], None] = _nothing,
        failure: str = "registry watch failed",
    ) -> None:
        self.service = service
        self.caller = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        self.on_drop = on_drop
        self.failure = failure

    def wants(self, event: Event) -> bool:
        return self.service is None or self.service == event.service.name

    def put(self, item: Event | BaseException | None) -> bool:
        """From any thread; False once the caller's loop is closed (nobody reads)."""
        try:
            self.caller.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            return False
        return True

    def events(self) -> AsyncIterator[Event]:
        events = self._events()
        # A generator dropped before it was ever iterated never runs its ``finally``.
        weakref.finalize(events, self.on_drop)
        return events

    async def _events(self) -> AsyncIterator[Event]:
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    return
                if isinstance(item, RegistryError):
                    raise item
                if isinstance(item, BaseException):
                    raise RegistryError(f"{self.failure}: {item!r}") from item
                yield item
        finally:
            self.on_drop()


class Feeds:
    """The watches of a registry whose table any thread may change; ``close`` ends
    them, and any made later at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._feeds: list[Feed] = []
        self._closed = False

    def add(self, service: str | None) -> Feed:
        """A watch of ``service`` (None: all) from now on, read on the running loop."""
        feed = Feed(service)
        with self._lock:
            if not self._closed:
                self._feeds.append(feed)
                return feed
        feed.put(None)
        return feed

    def remove(self, feed: Feed) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._feeds.remove(feed)

    def notify(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            feeds = list(self._feeds)
        for feed in feeds:
            for event in events:
                if feed.wants(event) and not feed.put(event):
                    self.remove(feed)  # its loop is closed
                    break

    def close(self) -> None:
        with self._lock:
            self._closed = True
            feeds, self._feeds = self._feeds, []
        for feed in feeds:
            feed.put(None)
