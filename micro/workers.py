"""The threads ``def`` handlers run in: a pool of its own per server, bounded.

Not asyncio's default executor: that one is shared with everything else in the
process (a few hung handlers stall every other ``def`` handler), and its threads are
joined at exit, so one call blocked for good keeps a stopped service alive. These
threads are daemons: a stopped server abandons the calls still running in them
(and says which), and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("micro.server")

T = TypeVar("T")

# asyncio's default executor's size: enough for handlers that mostly wait on I/O.
DEFAULT_THREADS = min(32, (os.cpu_count() or 1) + 4)

_Job = tuple[
    str,
    Callable[..., Any],
    tuple[Any, ...],
    contextvars.Context,
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
]


class Workers:
    """At most ``size`` threads, started as calls need them; a call beyond waits for
    one to be free.

    workers = Workers(8); reply = await workers.run("/pkg.Svc/Method", impl, request, ctx)
    """

    def __init__(self, size: int | None = None, name: str = "micro-handler") -> None:
        size = DEFAULT_THREADS if size is None else size
        if size < 1:
            raise ValueError(f"threads={size}: must be at least 1")
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, tuple[str, float]] = {}  # thread → (call, since)

    def run(self, what: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in a worker thread, in a copy of the caller's context (what
        a handler's middleware set is seen there); ``what`` names the call in the log
        if it is abandoned."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((what, fn, args, contextvars.copy_context(), loop, future))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if len(self._threads) < self.size:
                    thread = threading.Thread(
                        target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
        return future

    def abandon(self) -> None:
        """Stop the idle threads; log the calls still running, which are left to
        finish (or not) on their own: their threads do not keep the process alive."""
        with self._lock:
            running = sorted(self._running.values(), key=lambda r: r[1])
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)  # a busy thread takes its None when (if) it is done
        if running:
            now = time.monotonic()
            calls = ", ".join(f"{what} (running {now - since:.1f} s)" for what, since in running)
            log.warning(
                "abandoned %d call(s) still running in handler threads: %s", len(running), calls
            )

    def _work(self) -> None:
        me = threading.get_ident()
        while (job := self._jobs.get()) is not None:
            what, fn, args, context, loop, future = job
            if not future.cancelled():
                with self._lock:
                    self._running[me] = (what, time.monotonic())
                try:
                    result, error = context.run(fn, *args), None
                except BaseException as e:  # handed to the awaiting call, raised there
                    result, error = None, e
                with self._lock:
                    del self._running[me]
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, future, result, error)
            self._idle.release()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the call was cancelled meanwhile
        return
    if isinstance(error, StopIteration):  # a future cannot carry one
        error = RuntimeError(f"handler raised StopIteration: {error}")
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
