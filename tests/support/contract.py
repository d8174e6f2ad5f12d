"""What every broker backend must show, written once and run by each backend's tests.

The ``test_*`` functions here are the contract itself: each backend's test module
imports them (``from contract import *``), and pytest runs them there with that
module's ``open_broker`` and ``topic`` fixtures. The ``check_*`` functions take
backend-specific arguments and are called by each backend's own tests.

Each takes ``open_broker``: a coroutine function returning a new connected
broker (its own connection, as another process would have) that retries a failing
handler 3 times in all, with a short backoff, before dead-lettering. Topics are the
caller's, unique per test, so a backend on a shared server keeps tests apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

import micro
from micro import codec
from micro.broker import (
    Broker,
    Envelope,
    EventContext,
    MemoryBroker,
    Publisher,
    Subscription,
    dead_letter_topic,
    typed,
)
from micro.broker.base import DEADLINE_HEADER as DEADLINE
from micro.context import Context, current
from micro.delivery_micro import DeliveryClient, DeliveryHandler
from micro.delivery_pb2 import Delivered
from micro.delivery_pb2 import Envelope as WireEnvelope
from micro.registry import MemoryRegistry

__all__ = [  # the contract: ``from contract import *`` runs it in a backend's module
    "test_broadcast",
    "test_call_metadata_travels",
    "test_dead_letter",
    "test_fails_twice_then_succeeds",
    "test_malformed_dead_lettered",
    "test_queue_split",
    "test_typed_round_trip",
]

OpenBroker = Callable[[], Awaitable[Broker]]
Outstanding = Callable[[], Awaitable[int]]
WAIT = 10.0  # seconds any one expected message may take
SPLIT_WORK = 0.005  # seconds a queue member's handler works on each message


def counter() -> tuple[asyncio.Queue[int], Callable[[Int64Value, EventContext], Awaitable[None]]]:
    got: asyncio.Queue[int] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        await got.put(event.value)

    return got, handle


async def take(queue: asyncio.Queue[int], count: int) -> list[int]:
    return [await asyncio.wait_for(queue.get(), WAIT) for _ in range(count)]


async def test_broadcast(open_broker: OpenBroker, topic: str) -> None:
    """Two subscribers without a queue both get every message."""
    a, b, publisher = await open_broker(), await open_broker(), await open_broker()
    (got_a, handle_a), (got_b, handle_b) = counter(), counter()
    await a.subscribe(topic, typed(handle_a))
    await b.subscribe(topic, typed(handle_b))
    numbers = Publisher(publisher, topic, Int64Value)
    for i in range(20):
        await numbers.publish(Int64Value(value=i))
    assert sorted(await take(got_a, 20)) == list(range(20))
    assert sorted(await take(got_b, 20)) == list(range(20))
    for broker in (a, b, publisher):
        await broker.close()
    assert got_a.empty()
    assert got_b.empty()


async def test_queue_split(open_broker: OpenBroker, topic: str) -> None:
    """A queue of two subscribers splits the messages: each once, and each member
    handles a fair share (at least a quarter; a member taking everything fails).

    Handlers take a moment (``SPLIT_WORK``) as real ones do: a member holds at most
    its in-flight limit (concurrency, prefetch, a pull batch) of the burst, and
    while it works on those the rest goes to the other member rather than back to
    whichever asked first."""
    a, b, publisher = await open_broker(), await open_broker(), await open_broker()
    handled: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    def member(name: str) -> Callable[[Int64Value, EventContext], Awaitable[None]]:
        async def handle(event: Int64Value, ctx: EventContext) -> None:
            await asyncio.sleep(SPLIT_WORK)
            await handled.put((name, event.value))

        return handle

    subs: list[Subscription] = [
        await a.subscribe(topic, typed(member("a")), queue="workers"),
        await b.subscribe(topic, typed(member("b")), queue="workers"),
    ]
    numbers = Publisher(publisher, topic, Int64Value)
    total = 200
    for i in range(total):
        await numbers.publish(Int64Value(value=i))
    seen: list[tuple[str, int]] = []
    with contextlib.suppress(asyncio.TimeoutError):
        while len(seen) < total:
            seen.append(await asyncio.wait_for(handled.get(), WAIT))
    for sub in subs:
        await sub.unsubscribe()  # returns once its running handlers are done
    seen.extend(handled.get_nowait() for _ in range(handled.qsize()))
    values = sorted(value for _, value in seen)
    assert values == list(range(total)), f"lost or handled twice: {len(values)} of {total}"
    shares = {name: sum(1 for n, _ in seen if n == name) for name in ("a", "b")}
    assert min(shares.values()) >= total // 4, f"an uneven split: {shares}"
    print(f"queue split of {total}: {shares['a']} + {shares['b']}")
    for broker in (a, b, publisher):
        await broker.close()


@pytest.mark.parametrize("content_type", [codec.PROTOBUF, codec.JSON])
async def test_typed_round_trip(open_broker: OpenBroker, topic: str, content_type: str) -> None:
    """Message, id, headers and content type arrive as published."""
    subscriber, publisher = await open_broker(), await open_broker()
    got: asyncio.Queue[tuple[StringValue, EventContext]] = asyncio.Queue()

    async def handle(event: StringValue, ctx: EventContext) -> None:
        await got.put((event, ctx))

    await subscriber.subscribe(topic, typed(handle))
    greetings = Publisher(publisher, topic, StringValue, content_type=content_type)
    sent = await greetings.publish(StringValue(value="héllo \x00 wörld"), headers={"k": "v"})
    event, ctx = await asyncio.wait_for(got.get(), WAIT)
    assert event == StringValue(value="héllo \x00 wörld")
    assert (ctx.id, ctx.topic, ctx.headers["k"], ctx.attempt) == (sent, topic, "v", 1)
    assert ctx.envelope.content_type == content_type
    assert ctx.headers["micro-type"] == "google.protobuf.StringValue"
    for broker in (subscriber, publisher):
        await broker.close()


async def test_fails_twice_then_succeeds(open_broker: OpenBroker, topic: str) -> None:
    broker = await open_broker()
    attempts: list[int] = []
    done = asyncio.Event()

    async def flaky(event: Int64Value, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        done.set()

    await broker.subscribe(topic, typed(flaky), queue="flaky")
    await Publisher(broker, topic, Int64Value).publish(Int64Value(value=1))
    await asyncio.wait_for(done.wait(), WAIT)
    await broker.close()
    assert attempts == [1, 2, 3]


async def test_dead_letter(open_broker: OpenBroker, topic: str) -> None:
    """A handler that always fails: 3 attempts, then the message is in ``<topic>.dlq``
    with the reason."""
    broker = await open_broker()
    attempts: list[int] = []
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    async def broken(event: Int64Value, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("always")

    async def dead_letters(envelope: Envelope) -> None:
        await dead.put(envelope)

    await broker.subscribe(dead_letter_topic(topic), dead_letters, queue="dlq")
    await broker.subscribe(topic, typed(broken), queue="broken")
    sent = await Publisher(broker, topic, Int64Value).publish(Int64Value(value=7))
    envelope = await asyncio.wait_for(dead.get(), WAIT)
    await broker.close()
    assert attempts == [1, 2, 3]
    assert envelope.id == sent
    assert Int64Value.FromString(envelope.body).value == 7
    assert "RuntimeError: always" in envelope.headers["micro-dead-reason"]


MALFORMED = [
    pytest.param(b"\xff\xff garbage", {}, "not a valid google.protobuf.Int64Value", id="garbage"),
    pytest.param(
        StringValue(value="x").SerializeToString(),
        {"micro-type": "google.protobuf.StringValue"},
        "expected google.protobuf.Int64Value, got google.protobuf.StringValue",
        id="wrong-type",
    ),
]


@pytest.mark.parametrize(("body", "headers", "reason"), MALFORMED)
async def test_malformed_dead_lettered(
    open_broker: OpenBroker,
    topic: str,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: dict[str, str],
    reason: str,
) -> None:
    """Garbage is dead-lettered at once, logged with topic and id; consuming goes on."""
    broker = await open_broker()
    got, handle = counter()
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    async def dead_letters(envelope: Envelope) -> None:
        await dead.put(envelope)

    await broker.subscribe(dead_letter_topic(topic), dead_letters, queue="dlq")
    await broker.subscribe(topic, typed(handle), queue="numbers")
    bad = Envelope(topic, body, codec.PROTOBUF, headers)
    with caplog.at_level(logging.WARNING, logger="micro.broker"):
        await broker.publish(bad)
        envelope = await asyncio.wait_for(dead.get(), WAIT)
    assert envelope.id == bad.id
    assert envelope.body == body
    assert reason in envelope.headers["micro-dead-reason"]
    assert any(bad.id in r.getMessage() and topic in r.getMessage() for r in caplog.records)
    await Publisher(broker, topic, Int64Value).publish(Int64Value(value=5))
    assert await take(got, 1) == [5]  # the subscriber keeps consuming
    await broker.close()
    assert got.empty()  # and the bad message never reached the handler


async def not_returned_early(
    call: Awaitable[None], idle: Awaitable[None], what: str
) -> asyncio.Future[None]:
    """Start ``call`` (an unsubscribe or stop that must wait for the handlers running),
    then ``idle`` (the same with none running): once ``idle`` has returned, ``call``
    must not have. Nothing else announces an early return, but one that skipped the
    wait does what ``idle`` does, and began first. Returns ``call``, running."""
    calling = asyncio.ensure_future(call)
    await asyncio.wait_for(asyncio.ensure_future(idle), WAIT)
    assert not calling.done(), f"{what} returned while its handlers were still running"
    return calling


async def check_unsubscribe_drains(
    open_broker: OpenBroker, topic: str, outstanding: Outstanding | None = None
) -> None:
    """Handlers running when ``unsubscribe`` is called finish first: it returns only
    after them, and their messages are acked, not delivered again. ``outstanding``
    (for a backend that keeps messages) asks the server how many messages of queue
    ``workers`` it holds undelivered or unacked."""
    broker, publisher = await open_broker(), await open_broker()
    started: asyncio.Queue[int] = asyncio.Queue()
    release = asyncio.Event()
    finished: list[int] = []

    async def blocked(event: Int64Value, ctx: EventContext) -> None:
        await started.put(event.value)
        await release.wait()
        finished.append(event.value)

    sub = await broker.subscribe(topic, typed(blocked), queue="workers")
    numbers = Publisher(publisher, topic, Int64Value)
    for i in range(3):
        await numbers.publish(Int64Value(value=i))
    assert sorted(await take(started, 3)) == [0, 1, 2]
    idle = await broker.subscribe(dead_letter_topic(topic), typed(counter()[1]), queue="dlq")
    unsubscribing = await not_returned_early(sub.unsubscribe(), idle.unsubscribe(), "unsubscribe")
    release.set()
    await asyncio.wait_for(unsubscribing, WAIT)
    assert sorted(finished) == [0, 1, 2]
    await broker.close()  # sends what the client still buffers (NATS acks)
    if outstanding is not None:
        await nothing_outstanding(outstanding)
    # The queue's next subscriber gets what comes next, not the three again (an
    # unacked message would come first: RabbitMQ requeues it at the head).
    # Published by a new publisher: the grpc broker's find subscribers through the
    # registry, and one that looked before this subscribe may not see it yet.
    again, handle = counter()
    await (await open_broker()).subscribe(topic, typed(handle), queue="workers")
    later = await open_broker()
    await Publisher(later, topic, Int64Value).publish(Int64Value(value=3))
    assert await take(again, 1) == [3]
    assert sorted(finished) == [0, 1, 2]
    for each in (publisher, later):
        await each.close()


# grpc sends a call's timeout as grpc-timeout in the coarsest unit that keeps it to
# at most 8 digits, rounded up: timeouts of 10-100 s in 100 ms units. The server's
# deadline is its arrival time plus that, so up to one unit past the caller's own.
CALL_TIMEOUT = 30.0  # over WAIT, so what the subscriber sees left is still positive
WIRE_UNIT = 0.1  # grpc-timeout's unit for CALL_TIMEOUT
# grpc core keeps times in whole milliseconds: converting a time to it and back (for
# ``time_remaining``) moves it by under 1 ms each way.
GRPC_CLOCK = 0.002
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Relay(DeliveryHandler):
    """A gRPC service whose handler publishes an event. ``micro.Delivery`` is only
    the generated service micro ships; any would do."""

    def __init__(self, events: Publisher[StringValue]) -> None:
        self.events = events

    async def deliver(self, request: WireEnvelope, ctx: Context) -> Delivered:
        await self.events.publish(StringValue(value=request.id), headers={"x-given": "publish"})
        return Delivered()


async def test_call_metadata_travels(open_broker: OpenBroker, topic: str) -> None:
    """A publish made while serving a gRPC call carries, in the headers, the call's
    ``x-*`` and W3C trace metadata (never its credentials) and its deadline, which
    the subscriber reads as ``EventContext.time_remaining()``. The subscriber's
    handler runs outside that call: its own calls do not inherit it. A publish
    outside any call carries none of it."""
    subscriber, publisher = await open_broker(), await open_broker()
    got: asyncio.Queue[tuple[str, EventContext, Context | None]] = asyncio.Queue()

    async def handle(event: StringValue, ctx: EventContext) -> None:
        await got.put((event.value, ctx, current()))

    await subscriber.subscribe(topic, typed(handle), queue="workers")
    events = Publisher(publisher, topic, StringValue)
    registry = MemoryRegistry()
    config = micro.Config(registry="memory", broker="memory")
    relay = micro.Service("relay", registry=registry, broker=MemoryBroker(), config=config)
    relay.handle(_Relay(events))
    client = micro.Client(registry, config=config)
    await relay.start()
    try:
        called = time.time()
        await DeliveryClient("relay", client).deliver(
            WireEnvelope(id="in-a-call"),
            timeout=CALL_TIMEOUT,
            metadata={
                "x-user": "ana",
                "x-given": "call",
                "traceparent": TRACEPARENT,
                "tracestate": "vendor=1",
                "authorization": "Bearer secret",
                "other": "not passed on",
            },
        )
        answered = time.time()
        value, ctx, inside = await asyncio.wait_for(got.get(), WAIT)
        assert value == "in-a-call"
        passed = {k: v for k, v in ctx.headers.items() if k not in ("micro-type", DEADLINE)}
        assert passed == {
            "x-user": "ana",
            "x-given": "publish",  # the publisher's own headers win
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=1",
        }
        deadline = float(ctx.headers[DEADLINE])
        # The caller's deadline is set after ``called``; the server's is the request's
        # arrival (before ``answered``) plus the caller's time left, rounded up to
        # WIRE_UNIT; either may move by GRPC_CLOCK.
        early, late = called - GRPC_CLOCK, answered + WIRE_UNIT + GRPC_CLOCK
        assert early + CALL_TIMEOUT <= deadline <= late + CALL_TIMEOUT, (
            f"deadline {deadline - called:.4f} s after the call began, "
            f"answered {answered - called:.4f} s after"
        )
        remaining = ctx.time_remaining()
        assert remaining is not None
        assert CALL_TIMEOUT - WAIT < remaining <= deadline - answered
        assert inside is None, "the subscriber's handler ran inside the publisher's call"

        await events.publish(StringValue(value="outside"))
        value, ctx, inside = await asyncio.wait_for(got.get(), WAIT)
        assert (value, dict(ctx.headers)) == (
            "outside",
            {"micro-type": StringValue.DESCRIPTOR.full_name},
        )
        assert ctx.time_remaining() is None
        assert inside is None
    finally:
        await relay.stop(grace=0)
        await client.close()
    for broker in (subscriber, publisher):
        await broker.close()


CONSUMER = Path(__file__).with_name("consumer_node.py")
MESSAGES = 10_000
KILL_AFTER = 1_000  # handled messages before the kill: some, well under MESSAGES
CONCURRENCY = 64  # handlers a consumer runs at once: every backend's default limit
SUMMARY = "at_least_once"  # the user property the tests record their figures under


class Consumer:
    """A ``consumer_node.py`` process and what it reported: values whose handler started,
    and (value, attempt) per message handled, in order."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.started: set[int] = set()
        self.handled: list[tuple[int, int]] = []
        self.values: set[int] = set()  # of ``handled``
        self._news = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, backend: str, address: str, topic: str, hold_after: int | None = None
    ) -> Consumer:
        """``hold_after``: the handlers started after that many block for good."""
        holding = () if hold_after is None else (str(hold_after),)
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, str(CONSUMER), backend, address, topic, "workers", *holding),
            stdout=asyncio.subprocess.PIPE,
        )
        consumer = cls(process)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), WAIT)
            assert line.strip() == b"ready", f"consumer did not start: {line!r}"
        except BaseException:
            await consumer.kill()
            raise
        consumer._reader = asyncio.ensure_future(consumer._read())
        return consumer

    async def _read(self) -> None:
        """Read it all, as it comes: a consumer blocked on a full pipe would stall."""
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            if line.startswith(b"+"):
                self.started.add(int(line[1:]))
            else:
                value, attempt = map(int, line.split())
                self.handled.append((value, attempt))
                self.values.add(value)
            self._news.set()

    @property
    def running(self) -> set[int]:
        """Values whose handler started and has not finished."""
        return self.started - self.values

    async def until(self, condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
        """Wait for news from the process until ``condition()`` holds, 60 s at most."""
        deadline = time.monotonic() + 60
        while True:
            met = condition()
            if met if isinstance(met, bool) else await met:
                return
            left = deadline - time.monotonic()
            assert left > 0, f"{what}: not in 60 s ({len(self.handled)} handled)"
            self._news.clear()
            # A condition on the server's state may turn true with no news from here
            # (JetStream and Redis redeliver after a timeout): look again now and then.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(left, 0.1))

    async def kill(self) -> None:
        """SIGKILL: no ack, no goodbye. Returns once everything it wrote is read."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self._finish()

    async def stop(self) -> None:
        """SIGTERM: its broker drains and closes, then it exits 0."""
        self.process.terminate()
        assert await self._finish() == 0, "the consumer did not stop cleanly"

    async def _finish(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), WAIT)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, WAIT)  # to the end of the pipe
        elif self.process.stdout is not None:
            await asyncio.wait_for(self.process.stdout.read(), WAIT)
        return code


async def publish_range(publisher: Publisher[Int64Value], start: int, stop: int) -> None:
    for batch in range(start, stop, 250):
        await asyncio.gather(
            *(publisher.publish(Int64Value(value=i)) for i in range(batch, min(batch + 250, stop)))
        )


async def nothing_outstanding(outstanding: Outstanding) -> None:
    """Poll the server (it has no event to await) until it holds no message of the
    queue undelivered or unacked; fails after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while (left := await outstanding()) > 0:
        assert time.monotonic() < deadline, f"{left} messages still outstanding on the server"
        await asyncio.sleep(0.05)


async def check_at_least_once(
    open_broker: OpenBroker,
    backend: str,
    address: str,
    topic: str,
    outstanding: Outstanding,
    window: int,
) -> str:
    """10 000 messages waiting in queue ``workers``; its consumer process handles
    1 000, then blocks every handler it starts; once all it may run at once
    (``CONCURRENCY``) are running it is killed with SIGKILL, and a new one started:
    every message is handled at least once.

    ``outstanding`` asks the server how many messages of the queue are undelivered or
    unacked (with a consumer running, RabbitMQ tells only the undelivered ones).
    ``window`` is the most messages the server hands one consumer without an ack.

    Duplicates have one cause: messages the killed consumer handled whose ack the
    server never got. The server delivers those again, flagged as redelivered (the
    attempt number goes on from the server's count), along with those it was still
    handling; it cannot redeliver more than it had handed out unacked, ``window``. So
    a message is handled at most twice, the second time as a redelivery, and
    duplicates plus the messages in flight at the kill stay within ``window``.
    Returns a line saying what happened, for the test report.
    """
    broker = await open_broker()
    # The queue exists from here on and keeps what is published for it.
    await (await broker.subscribe(topic, typed(counter()[1]), queue="workers")).unsubscribe()
    await publish_range(Publisher(broker, topic, Int64Value), 0, MESSAGES)
    everything = set(range(MESSAGES))
    first = await Consumer.start(backend, address, topic, hold_after=KILL_AFTER)
    try:
        # Blocked handlers never finish, so this state lasts until the kill.
        await first.until(
            lambda: len(first.handled) == KILL_AFTER and len(first.running) == CONCURRENCY,
            f"first consumer: {KILL_AFTER} handled, then {CONCURRENCY} handlers running",
        )
    finally:
        await first.kill()
    before = first.values
    in_flight = first.running
    assert (len(before), len(in_flight)) == (KILL_AFTER, CONCURRENCY), (
        "more ran between the state seen and the kill"
    )
    assert all(attempt == 1 for _, attempt in first.handled)
    assert len(first.handled) == len(before), "the first consumer handled a message twice"

    second = await Consumer.start(backend, address, topic)
    try:
        missing = everything - before

        async def settled() -> bool:
            return missing <= second.values and not second.running and await outstanding() == 0

        await second.until(settled, "every message handled, none outstanding")
    except BaseException:
        await second.kill()
        raise
    await second.stop()
    await nothing_outstanding(outstanding)  # also the RabbitMQ unacked: none left behind

    again = dict(second.handled)
    assert len(again) == len(second.handled), "the second consumer handled a message twice"
    assert before | set(again) == everything, "a message was lost"
    redelivered = {value for value, attempt in again.items() if attempt > 1}
    duplicates = before & set(again)
    assert duplicates <= redelivered, "a message handled before came again as new"
    assert in_flight <= redelivered, "a message being handled at the kill did not come back"
    assert len(duplicates) + len(in_flight) <= len(redelivered) <= window
    await broker.close()
    return (
        f"{MESSAGES} messages, killed after {len(before)} handled with {len(in_flight)} "
        f"running; {len(redelivered)} redelivered (window {window}), "
        f"{len(duplicates)} duplicates"
    )
