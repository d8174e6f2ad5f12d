"""Redelivery on its own: attempts count on from the envelope's (the server's
delivery count), and a message delivered too often is dead-lettered unhandled; and
``start``, which runs a delivery without a task until it has to wait; ``Running``,
the deliveries under way that an unsubscribe waits for."""

from __future__ import annotations

import asyncio
import contextvars
import logging

import pytest

from micro import codec
from micro.broker import Envelope, Undeliverable
from micro.broker.redelivery import Redelivery, Running, start


class Recorder:
    """A handler that fails ``failures`` times, and the dead letters it causes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[Envelope] = []
        self.dead: list[Envelope] = []

    async def handle(self, envelope: Envelope) -> None:
        self.seen.append(envelope)
        if len(self.seen) <= self.failures:
            raise RuntimeError(f"failure {len(self.seen)}")

    async def dead_letter(self, envelope: Envelope) -> None:
        self.dead.append(envelope)


def envelope(attempt: int) -> Envelope:
    return Envelope("orders", b"x", codec.PROTOBUF, {"k": "v"}, attempt=attempt)


async def test_a_first_delivery_reaches_the_handler_as_is() -> None:
    sent, recorder = envelope(1), Recorder(failures=0)
    await Redelivery(3, backoff=0.001).run(recorder.handle, sent, recorder.dead_letter)
    assert recorder.seen == [sent]
    assert recorder.seen[0] is sent  # no copy on the usual path
    assert recorder.dead == []


async def test_attempts_count_on_from_the_delivery_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Delivered twice before (to consumers that died): attempts 3 and 4 of 4 remain,
    and the log names them."""
    sent, recorder = envelope(3), Recorder(failures=5)
    with caplog.at_level(logging.WARNING, logger="micro.broker"):
        await Redelivery(4, backoff=0.001).run(recorder.handle, sent, recorder.dead_letter)
    assert [e.attempt for e in recorder.seen] == [3, 4]
    assert recorder.seen[0] is sent
    assert [r.getMessage() for r in caplog.records if "failed" in r.getMessage()] == [
        f"handler of orders failed on message {sent.id} (attempt 3 of 4): RuntimeError: failure 1",
        f"handler of orders failed on message {sent.id} (attempt 4 of 4): RuntimeError: failure 2",
    ]
    (dead,) = recorder.dead
    assert (dead.topic, dead.id, dead.attempt) == ("orders.dlq", sent.id, 1)
    assert dead.headers == {"k": "v", "micro-dead-reason": "RuntimeError: failure 2"}


async def test_a_later_attempt_that_succeeds_is_not_dead_lettered() -> None:
    recorder = Recorder(failures=1)
    await Redelivery(3, backoff=0.001).run(recorder.handle, envelope(2), recorder.dead_letter)
    assert [e.attempt for e in recorder.seen] == [2, 3]
    assert recorder.dead == []


@pytest.mark.parametrize("delivered", [4, 9])
async def test_delivered_more_than_max_attempts_is_dead_lettered_unhandled(
    delivered: int,
) -> None:
    sent, recorder = envelope(delivered), Recorder(failures=0)
    await Redelivery(3, backoff=0.001).run(recorder.handle, sent, recorder.dead_letter)
    assert recorder.seen == []
    (dead,) = recorder.dead
    assert dead.headers["micro-dead-reason"] == (
        f"delivered {delivered} times, max_attempts=3: its consumers died while handling it"
    )


async def test_undeliverable_is_dead_lettered_at_once_whatever_the_attempt() -> None:
    seen: list[int] = []
    dead: list[Envelope] = []

    async def refuse(e: Envelope) -> None:
        seen.append(e.attempt)
        raise Undeliverable("garbage")

    async def keep(e: Envelope) -> None:
        dead.append(e)

    await Redelivery(5, backoff=0.001).run(refuse, envelope(2), keep)
    assert seen == [2]
    assert [e.headers["micro-dead-reason"] for e in dead] == ["garbage"]


# -- start: a delivery runs at once, in a task only from where it first waits ---------

seen_in_handler: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="caller")


async def test_a_delivery_that_never_waits_needs_no_task() -> None:
    done: list[str] = []

    async def quick() -> None:
        seen_in_handler.set("handler")
        done.append("handled")

    assert start(quick()) is None
    assert done == ["handled"]  # before start returned
    assert seen_in_handler.get() == "caller"  # the handler's context is its own


async def test_a_delivery_that_waits_goes_on_in_a_task() -> None:
    release = asyncio.Event()
    steps: list[str] = []

    async def slow() -> None:
        seen_in_handler.set("handler")
        steps.append("started")
        await release.wait()
        await asyncio.sleep(0)  # a bare yield on the way
        steps.append(f"finished in {seen_in_handler.get()}")

    task = start(slow())
    assert task is not None
    assert steps == ["started"]
    release.set()
    await asyncio.wait_for(task, 5)
    assert steps == ["started", "finished in handler"]
    assert seen_in_handler.get() == "caller"


async def test_cancelling_the_task_cancels_the_delivery() -> None:
    cleaned = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    task = start(stuck())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()


async def test_the_result_of_an_awaited_future_reaches_the_delivery() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    got: list[int] = []

    async def waits_for_value() -> None:
        got.append(await future)

    task = start(waits_for_value())
    assert task is not None
    future.set_result(42)
    await asyncio.wait_for(task, 5)
    assert got == [42]


async def test_a_delivery_that_fails_at_once_is_reported_not_raised() -> None:
    """As a task's exception would be: to the loop's handler, so the reader that
    started it goes on."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:

        async def broken() -> None:
            raise RuntimeError("bug")

        assert start(broken()) is None
    finally:
        loop.set_exception_handler(None)
    assert [str(c["exception"]) for c in reported] == ["bug"]


async def test_drain_waits_for_deliveries_added_while_it_waits() -> None:
    running, release, order = Running(), asyncio.Event(), []

    async def delivery(name: str) -> None:
        await release.wait()
        order.append(name)

    async def first() -> None:
        await delivery("first")
        running.add(start(delivery("second")))  # a retry, say, while draining

    running.add(start(first()))
    drained = asyncio.ensure_future(running.drain())
    asyncio.get_running_loop().call_soon(release.set)  # after the drain has begun
    await asyncio.wait_for(drained, 5)  # bound: generous, the deliveries wait for nothing
    assert (order, len(running)) == (["first", "second"], 0)


async def test_room_waits_while_the_limit_is_under_way() -> None:
    running, release = Running(), asyncio.Event()

    async def blocked() -> None:
        await release.wait()

    async def quick() -> None:
        pass

    running.add(start(blocked()))
    running.add(start(blocked()))
    running.add(start(quick()))  # finished at once: takes no room
    assert len(running) == 2

    async def admitted() -> bool:
        await running.room(2)
        return release.is_set()

    waiter = asyncio.ensure_future(admitted())
    asyncio.get_running_loop().call_soon(release.set)  # after the waiter has begun
    assert await asyncio.wait_for(waiter, 5)  # bound: generous, release frees both
