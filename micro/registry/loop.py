"""A private event loop on a thread of its own, for registry backends whose client
library binds connections to the loop that made them (nats-py; grpc.aio under aetcd).

One registry may serve a ``Service`` on its loop and a blocking client on that
client's background loop thread. So the backend's connections live on a loop of the
registry's own: each call runs there (``LoopThread.run``) and is awaited from the
caller's loop, and watch events come back to the caller's loop through a ``Feed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from micro.registry.base import Event, RegistryError

T = TypeVar("T")


class LoopThread:
    """The loop and its daemon thread, started at first use; ``owner`` names the
    registry in the error raised once it is closed."""

    def __init__(self, name: str, owner: str) -> None:
        self.name = name
        self.owner = owner
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RegistryError(f"{self.owner} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` run on the private loop, awaited from the caller's."""
        try:
            loop = self.loop()
        except RegistryError:
            coro.close()
            raise
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """``callback(*args)`` on the private loop, if it still runs."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    async def close(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``last()`` on the private loop (if it was ever started), then stop it
        and join its thread. Later calls raise ``RegistryError``."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._closed = True
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(last(), loop))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
        loop.close()


async def quietly(coro: Coroutine[Any, Any, Any]) -> None:
    """Await ``coro``, ignoring its failure: for clean-up that must not hide the
    outcome that led to it."""
    with contextlib.suppress(Exception):
        await coro


class Feed:
    """A watch's events, put on the private loop and read on the caller's loop (the
    one running when the ``Feed`` is made). ``None`` ends the iteration; an exception
    is raised there, as a ``RegistryError`` (``failure`` says whose). ``on_drop`` runs
    on the private loop when the iterator is closed, ends or is dropped unstarted."""

    def __init__(self, thread: LoopThread, on_drop: Callable[[], None], failure: str) -> None:
        self.thread = thread
        self.caller = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        self.on_drop = on_drop
        self.failure = failure

    def put(self, item: Event | BaseException | None) -> None:
        """Called on the private loop."""
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            self.caller.call_soon_threadsafe(self.queue.put_nowait, item)

    def events(self) -> AsyncIterator[Event]:
        events = self._events()
        # A generator dropped before it was ever iterated never runs its ``finally``.
        weakref.finalize(events, self.thread.call_soon, self.on_drop)
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
            self.thread.call_soon(self.on_drop)
