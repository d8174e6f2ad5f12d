"""Redelivery for every backend: ack on return, retry with backoff on an exception,
dead-letter after the last attempt or at once for a message that can never be handled.

What became of a failed delivery (retried, dead-lettered) is decided here, and told
to the delivery's middleware through ``unsettled``: the typed handler leaves its
hooks' report there when the handler fails (``micro.broker.events.typed``).

Attempts count on from ``envelope.attempt``: a backend whose server counts deliveries
(JetStream, Redis claims, quorum queues) builds the envelope with that count, so a
message redelivered after its consumers crashed does not get ``max_attempts`` fresh
attempts, and one delivered more often than that is dead-lettered unhandled.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from micro.broker.base import (
    DEAD_LETTER_SUFFIX,
    REASON_HEADER,
    Envelope,
    RawHandler,
    Undeliverable,
    check_positive,
    dead_letter_topic,
)
from micro.logs import Throttle
from micro.middleware.base import Disposition

log = logging.getLogger("micro.broker")

unsettled: ContextVar[Callable[[Disposition], None] | None] = ContextVar(
    "micro_unsettled", default=None
)
"""Set by a failed typed delivery with middleware: called with what became of it."""


def _settle(disposition: Disposition) -> None:
    report = unsettled.get()
    if report is not None:
        unsettled.set(None)
        report(disposition)


class Redelivery:
    """``max_attempts`` deliveries at most, ``backoff`` doubling (with jitter) between."""

    def __init__(self, max_attempts: int = 5, backoff: float = 0.05, max_backoff: float = 2.0):
        check_positive(max_attempts=max_attempts)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        # A sender can make every message fail (garbage, say): bounded lines about them.
        self._failures = Throttle(log, "failed deliveries")

    async def run(
        self,
        handler: RawHandler,
        envelope: Envelope,
        dead_letter: Callable[[Envelope], Awaitable[None]],
    ) -> None:
        """Handle ``envelope``, attempts ``envelope.attempt`` to ``max_attempts``;
        returns once it was handled or dead-lettered (raises only if the dead letter
        could not be published)."""
        attempt = envelope.attempt
        if attempt > self.max_attempts:
            reason = (
                f"delivered {attempt} times, max_attempts={self.max_attempts}: "
                "its consumers died while handling it"
            )
        else:
            while True:  # one frame, not a helper coroutine: this runs for every message
                try:
                    await handler(envelope)
                    return
                except Undeliverable as e:
                    reason = str(e) or type(e).__name__
                    _settle("dead-lettered")
                    break
                except Exception as e:
                    reason = f"{type(e).__name__}: {e}"
                    self._failures.log(
                        logging.WARNING,
                        "handler of %s failed on message %s (attempt %d of %d): %s",
                        envelope.topic,
                        envelope.id,
                        attempt,
                        self.max_attempts,
                        reason,
                    )
                    if attempt >= self.max_attempts:
                        _settle("dead-lettered")
                        break
                    _settle("retried")
                cap = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(cap / 2, cap))
                attempt += 1
                envelope = replace(envelope, attempt=attempt)
        if envelope.topic.endswith(DEAD_LETTER_SUFFIX):  # no dead letters of dead letters
            self._failures.log(
                logging.ERROR,
                "dropping dead letter %s of %s: %s",
                envelope.id,
                envelope.topic,
                reason,
            )
            return
        self._failures.log(
            logging.WARNING,
            "dead-lettering message %s of %s: %s",
            envelope.id,
            envelope.topic,
            reason,
        )
        await dead_letter(
            replace(
                envelope,
                topic=dead_letter_topic(envelope.topic),
                headers={**envelope.headers, REASON_HEADER: reason},
                attempt=1,
            )
        )


class Running:
    """The deliveries of one subscription under way, for every backend: its
    ``unsubscribe`` returns once they have finished (``drain``), and one that bounds
    its handlers waits for ``room``."""

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, task: asyncio.Task[Any] | None) -> None:
        """Count ``task`` until it is done; None (a delivery that ``start`` finished at
        once) counts for nothing."""
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def room(self, limit: int) -> None:
        """Wait while ``limit`` deliveries are under way."""
        while len(self.tasks) >= limit:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)

    async def drain(self) -> None:
        """Wait until the deliveries under way, and any added meanwhile, are done."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class Listener:
    """A subscription of a broker that hands each message to its handler in this
    process as a task of its own (memory, grpc peer). ``unsubscribe`` takes it off its
    broker (``remove``) and then waits for the deliveries under way."""

    def __init__(
        self,
        topic: str,
        handler: RawHandler,
        queue: str | None,
        remove: Callable[[Listener], Awaitable[None]],
    ) -> None:
        self.topic = topic
        self.queue = queue
        self.handler = handler
        self.running = Running()
        self._remove = remove

    async def unsubscribe(self) -> None:
        await self._remove(self)
        await self.running.drain()


def start(
    work: Coroutine[Any, Any, None], context: contextvars.Context | None = None
) -> asyncio.Task[None] | None:
    """Run ``work`` (a delivery) at once up to where it first waits, and on from there
    in a task; None if it finished without waiting.

    Most handlers of small messages never wait, and a task per message costs about
    as much as the rest of the delivery: this is Python 3.12's eager task start, for
    3.10 on. The first step runs in a context of its own, which the task carries on,
    so context variables a handler sets do not leak into the caller's: a copy of the
    caller's, or ``context`` (an empty one: nothing of the caller's reaches it).
    """
    if context is None:
        context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    try:
        awaited = context.run(work.send, None)
    except StopIteration:
        return None
    except Exception as e:  # reported as a failed task's would be, not raised to the reader
        loop.call_exception_handler({"message": "a broker delivery failed", "exception": e})
        return None
    # A new task copies the current context: inside ``context.run``, that is ``context``.
    return context.run(loop.create_task, _resume(work, awaited))


async def _resume(work: Coroutine[Any, Any, None], awaited: Any) -> None:
    await _Resumed(work, awaited)


class _Resumed:
    """Awaitable: a coroutine already started by hand, continued by whoever awaits
    this (a task) from the future it was waiting on."""

    __slots__ = ("awaited", "work")

    def __init__(self, work: Coroutine[Any, Any, None], awaited: Any) -> None:
        self.work = work
        self.awaited = awaited

    def __await__(self) -> Generator[Any, Any, None]:
        work, awaited = self.work, self.awaited
        while True:
            try:
                sent = yield awaited
            except BaseException as e:  # cancelled (or closed): hand it on to the work
                try:
                    awaited = work.throw(e)
                except StopIteration:
                    return
            else:
                try:
                    awaited = work.send(sent)
                except StopIteration:
                    return
