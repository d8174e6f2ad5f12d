"""What every broker backend must show, written once and run by each backend's tests.

Each check takes ``open_broker``: a coroutine function returning a new connected
broker (its own connection, as another process would have) that retries a failing
handler 3 times in all, with a short backoff, before dead-lettering. Topics are the
caller's, unique per test, so a backend on a shared server keeps tests apart.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

from micro import codec
from micro.broker import (
    Broker,
    Envelope,
    EventContext,
    Publisher,
    Subscription,
    dead_letter_topic,
    typed,
)

OpenBroker = Callable[[], Awaitable[Broker]]
WAIT = 10.0  # seconds any one expected message may take


def counter() -> tuple[asyncio.Queue[int], Callable[[Int64Value, EventContext], Awaitable[None]]]:
    got: asyncio.Queue[int] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        await got.put(event.value)

    return got, handle


async def take(queue: asyncio.Queue[int], count: int) -> list[int]:
    return [await asyncio.wait_for(queue.get(), WAIT) for _ in range(count)]


async def check_broadcast(open_broker: OpenBroker, topic: str) -> None:
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


async def check_queue_split(open_broker: OpenBroker, topic: str) -> None:
    """A queue of two subscribers splits the messages: each once, both get some."""
    a, b, publisher = await open_broker(), await open_broker(), await open_broker()
    (got_a, handle_a), (got_b, handle_b) = counter(), counter()
    subs: list[Subscription] = [
        await a.subscribe(topic, typed(handle_a), queue="workers"),
        await b.subscribe(topic, typed(handle_b), queue="workers"),
    ]
    numbers = Publisher(publisher, topic, Int64Value)
    total = 200
    for i in range(total):
        await numbers.publish(Int64Value(value=i))
    seen: list[int] = []
    while len(seen) < total:
        getters = {asyncio.ensure_future(q.get()): q for q in (got_a, got_b)}
        done, pending = await asyncio.wait(getters, timeout=WAIT, return_when="FIRST_COMPLETED")
        for future in pending:
            future.cancel()
        assert done, f"only {len(seen)} of {total} messages arrived"
        seen.extend(f.result() for f in done)
    for sub in subs:
        await sub.unsubscribe()
    seen.extend(got_a.get_nowait() for _ in range(got_a.qsize()))
    seen.extend(got_b.get_nowait() for _ in range(got_b.qsize()))
    assert sorted(seen) == list(range(total)), "a message was lost or handled twice"
    for broker in (a, b, publisher):
        await broker.close()


async def check_typed_round_trip(open_broker: OpenBroker, topic: str, content_type: str) -> None:
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


async def check_fails_twice_then_succeeds(open_broker: OpenBroker, topic: str) -> None:
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


async def check_dead_letter(open_broker: OpenBroker, topic: str) -> None:
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


async def check_malformed_dead_lettered(
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


CONSUMER = Path(__file__).with_name("consumer_node.py")
MESSAGES = 10_000


def start_consumer(backend: str, address: str, topic: str, report: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(CONSUMER), backend, address, topic, "workers", str(report)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the consumer is subscribed (or dies)
    assert line.strip() == "ready", f"consumer did not start: {line!r}"
    return process


def stop_consumer(process: subprocess.Popen[str]) -> None:
    """SIGKILL (no ack, no goodbye), reap it, close the pipe it wrote ``ready`` on."""
    process.kill()
    process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


def handled(report: Path) -> list[int]:
    return [int(line) for line in report.read_text().split()] if report.exists() else []


async def publish_range(publisher: Publisher[Int64Value], start: int, stop: int) -> None:
    for batch in range(start, stop, 250):
        await asyncio.gather(
            *(publisher.publish(Int64Value(value=i)) for i in range(batch, min(batch + 250, stop)))
        )


async def wait_for_handled(report: Path, count: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while len(set(values := handled(report))) < count:
        assert time.monotonic() < deadline, f"{len(set(values))} of {count} handled in {seconds} s"
        await asyncio.sleep(0.05)  # the report is a file another process appends to
    return values


async def check_at_least_once(
    open_broker: OpenBroker, backend: str, address: str, topic: str, report: Path
) -> int:
    """10 000 messages, the consumer killed with SIGKILL mid-stream and started again:
    every message handled at least once. Returns the number of duplicates."""
    publisher_broker = await open_broker()
    numbers = Publisher(publisher_broker, topic, Int64Value)
    consumer = start_consumer(backend, address, topic, report)
    try:
        await publish_range(numbers, 0, MESSAGES // 2)
        await wait_for_handled(report, 1_000, 60)
        stop_consumer(consumer)
        await publish_range(numbers, MESSAGES // 2, MESSAGES)  # while no consumer runs
        before_restart = len(set(handled(report)))
        assert before_restart < MESSAGES, "the consumer was not killed mid-stream"
        consumer = start_consumer(backend, address, topic, report)
        values = await wait_for_handled(report, MESSAGES, 60)
    finally:
        stop_consumer(consumer)
        await publisher_broker.close()
    assert set(values) == set(range(MESSAGES)), "a message was lost"
    duplicates = len(values) - MESSAGES
    print(f"{backend}: {MESSAGES} messages, killed after {before_restart}, {duplicates} duplicates")
    return duplicates
