"""A private event loop on a thread of its own, for registry backends whose client
library binds connections to the loop that made them (nats-py; grpc.aio under aetcd),
and for the registry work of a blocking ``Client`` (``run_sync``, ``stop``).

One registry may serve a ``Service`` on its loop and a blocking client on that
client's background loop thread. So the backend's connections live on a loop of the
registry's own: each call runs there (``LoopThread.run``) and is awaited from the
caller's loop, and watch events come back to the caller's loop through a ``Feed``
(``micro.registry.feed``).
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from micro.registry.base import Event, RegistryError, Service, group
from micro.registry.feed import Feed

T = TypeVar("T")
P = ParamSpec("P")


class LoopThread:
    """The loop and its daemon thread, started at first use; ``owner`` names the
    registry in the error raised once it is closed.

    ``stop_at_exit``: a program that never closes its owner still exits quietly: at
    interpreter exit the loop's tasks (a registry watch) are cancelled and the loop
    stopped, as otherwise they are destroyed pending and asyncio says so on stderr."""

    def __init__(self, name: str, owner: str, *, stop_at_exit: bool = False) -> None:
        self.name = name
        self.owner = owner
        self.stop_at_exit = stop_at_exit
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
                if self.stop_at_exit:
                    atexit.register(self.stop)
            return self._loop

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` run on the private loop, awaited from the caller's."""
        try:
            loop = self.loop()
        except RegistryError:
            coro.close()
            raise
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """``coro`` run on the private loop, waited for by a thread with no loop of its
        own (at most ``timeout`` seconds)."""
        try:
            loop = self.loop()
        except RegistryError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """``callback(*args)`` on the private loop, if it still runs."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    async def close(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``last()`` on the private loop (if it was ever started), then stop it
        and join its thread. Later calls raise ``RegistryError``."""
        loop, thread = self._take()
        if loop is None or thread is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(last(), loop))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
        loop.close()

    def _take(self) -> tuple[asyncio.AbstractEventLoop | None, threading.Thread | None]:
        """The loop and its thread, if started; later calls raise ``RegistryError``."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._closed = True
            self._loop = self._thread = None
        return loop, thread

    def stop(self) -> None:
        """``close`` for a thread with no loop of its own: the loop's tasks are
        cancelled, then it stops."""
        atexit.unregister(self.stop)
        loop, thread = self._take()
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _cancel_tasks() -> None:
    """Cancel every other task of the running loop and wait for them to end."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def quietly(coro: Coroutine[Any, Any, Any]) -> None:
    """Await ``coro``, ignoring its failure: for clean-up that must not hide the
    outcome that led to it."""
    with contextlib.suppress(Exception):
        await coro


class Watching(Protocol):
    """One ``watch()`` of a ``LoopRegistry`` backend."""

    @property
    def feed(self) -> Feed: ...

    def stop(self) -> None:
        """End the watch (on the private loop): its reader's iteration ends."""


W = TypeVar("W", bound=Watching)


class LoopRegistry(abc.ABC, Generic[W]):
    """The ``Registry`` protocol for a backend whose connections live on a private
    loop (etcd, NATS): each call runs the backend's coroutine there, once the watches
    requested before the call are set up, so that they see what it changes.

    A backend provides, all run on the private loop: ``_register``, ``_deregister``,
    ``_entries`` (one entry per node, of a service or of all), ``_new_watch`` and
    ``_begin`` (a watch, and the setting up of it), ``_disconnect``. ``close`` stops
    the watches in ``_watches``, disconnects, then cancels what still runs there.
    """

    def __init__(self, thread: LoopThread, close_timeout: float) -> None:
        self._thread = thread
        self._close_timeout = close_timeout
        # Below: touched only on the private loop.
        self._setups: set[asyncio.Future[Any]] = set()  # watches being set up
        self._watches: set[W] = set()

    async def register(self, service: Service, ttl: float) -> None:
        await self._thread.run(self._settled(self._register, service, ttl))

    async def deregister(self, service: Service) -> None:
        await self._thread.run(self._settled(self._deregister, service))

    async def get_service(self, name: str) -> list[Service]:
        return group(await self._thread.run(self._settled(self._entries, name)))

    async def list_services(self) -> list[Service]:
        return group(await self._thread.run(self._settled(self._entries, None)))

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        """Changes from this call on: the watch is set up now, on the private loop,
        and registry calls made after this one wait until it is."""
        self._thread.loop()  # raises once closed
        watch = self._new_watch(service)
        self._thread.call_soon(self._start, watch)
        return watch.feed.events()

    async def close(self) -> None:
        await self._thread.close(self._close)

    # -- on the private loop ------------------------------------------------------

    def _start(self, watch: W) -> None:
        setup = self._begin(watch)
        self._setups.add(setup)
        setup.add_done_callback(self._setups.discard)

    async def _settled(
        self, op: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``op(*args, **kwargs)``, once the watches requested before it are set up."""
        if self._setups:
            await asyncio.wait(set(self._setups))
        return await op(*args, **kwargs)

    async def _close(self) -> None:
        for watch in list(self._watches):
            watch.stop()
        await self._disconnect()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        if rest:  # bounded: a task that swallowed its cancellation must not hang close
            await asyncio.wait(rest, timeout=self._close_timeout)

    @abc.abstractmethod
    async def _register(self, service: Service, ttl: float) -> None: ...

    @abc.abstractmethod
    async def _deregister(self, service: Service) -> None: ...

    @abc.abstractmethod
    async def _entries(self, name: str | None) -> list[Service]: ...

    @abc.abstractmethod
    def _new_watch(self, service: str | None) -> W:
        """A watch of ``service`` (None: all), made on the caller's loop."""

    @abc.abstractmethod
    def _begin(self, watch: W) -> asyncio.Future[Any]:
        """Start setting up ``watch``; the future is done once it is."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the backend's connections (at ``close``)."""
