"""Typed pub/sub on the in-process broker: fan-out, queues, retries, dead letters."""

from __future__ import annotations

import asyncio
import logging

import contract
import pytest
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

import micro
from micro import codec
from micro.broker import (
    Envelope,
    EventContext,
    MemoryBroker,
    Publisher,
    dead_letter_topic,
    typed,
)
from micro.registry import MemoryRegistry


def collector() -> tuple[asyncio.Queue[tuple[int, EventContext]], object]:
    got: asyncio.Queue[tuple[int, EventContext]] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        await got.put((event.value, ctx))

    return got, handle


async def drain(queue: asyncio.Queue[tuple[int, EventContext]], count: int) -> list[int]:
    return [(await asyncio.wait_for(queue.get(), 5))[0] for _ in range(count)]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(max_attempts=3, backoff=0.001)


async def test_broadcast_reaches_every_subscriber(broker: MemoryBroker) -> None:
    (a, handle_a), (b, handle_b) = collector(), collector()
    await broker.subscribe("numbers", typed(handle_a))  # type: ignore[arg-type]
    await broker.subscribe("numbers", typed(handle_b))  # type: ignore[arg-type]
    numbers = Publisher(broker, "numbers", Int64Value)
    for i in range(10):
        await numbers.publish(Int64Value(value=i))
    assert sorted(await drain(a, 10)) == list(range(10))
    assert sorted(await drain(b, 10)) == list(range(10))


async def test_queue_splits_without_duplicates(broker: MemoryBroker) -> None:
    (a, handle_a), (b, handle_b) = collector(), collector()
    sub_a = await broker.subscribe("jobs", typed(handle_a), queue="workers")  # type: ignore[arg-type]
    sub_b = await broker.subscribe("jobs", typed(handle_b), queue="workers")  # type: ignore[arg-type]
    jobs = Publisher(broker, "jobs", Int64Value)
    for i in range(20):
        await jobs.publish(Int64Value(value=i))
    await sub_a.unsubscribe()  # returns once its running handlers are done
    await sub_b.unsubscribe()
    got_a = [a.get_nowait()[0] for _ in range(a.qsize())]
    got_b = [b.get_nowait()[0] for _ in range(b.qsize())]
    assert got_a
    assert got_b
    assert sorted(got_a + got_b) == list(range(20))


@pytest.mark.parametrize("content_type", [codec.PROTOBUF, codec.JSON])
async def test_typed_round_trip(broker: MemoryBroker, content_type: str) -> None:
    got: asyncio.Queue[tuple[StringValue, EventContext]] = asyncio.Queue()

    async def handle(event: StringValue, ctx: EventContext) -> None:
        await got.put((event, ctx))

    await broker.subscribe("greetings", typed(handle))
    publisher = Publisher(broker, "greetings", StringValue, content_type=content_type)
    sent_id = await publisher.publish(StringValue(value="héllo"), headers={"k": "v"})
    event, ctx = await asyncio.wait_for(got.get(), 5)
    assert event == StringValue(value="héllo")
    assert (ctx.id, ctx.topic, ctx.headers["k"], ctx.attempt) == (sent_id, "greetings", "v", 1)
    assert ctx.envelope.content_type == content_type


async def test_publishing_the_wrong_type_is_refused(broker: MemoryBroker) -> None:
    with pytest.raises(TypeError, match=r"greetings carries google\.protobuf\.StringValue"):
        await Publisher(broker, "greetings", StringValue).publish(Int64Value())  # type: ignore[arg-type]


async def test_fails_twice_then_succeeds(broker: MemoryBroker) -> None:
    attempts: list[int] = []
    done = asyncio.Event()

    async def flaky(event: Int64Value, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        done.set()

    await broker.subscribe("flaky", typed(flaky))
    await Publisher(broker, "flaky", Int64Value).publish(Int64Value(value=1))
    await asyncio.wait_for(done.wait(), 5)
    assert attempts == [1, 2, 3]


async def test_always_failing_lands_in_dead_letter(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    dead: asyncio.Queue[Envelope] = asyncio.Queue()
    attempts: list[int] = []

    async def broken(event: Int64Value, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("always")

    async def dead_letters(envelope: Envelope) -> None:
        await dead.put(envelope)

    await broker.subscribe("broken", typed(broken))
    await broker.subscribe(dead_letter_topic("broken"), dead_letters)
    sent = await Publisher(broker, "broken", Int64Value).publish(Int64Value(value=7))
    envelope = await asyncio.wait_for(dead.get(), 5)
    assert attempts == [1, 2, 3]
    assert envelope.id == sent
    assert Int64Value.FromString(envelope.body).value == 7
    assert "RuntimeError: always" in envelope.headers["micro-dead-reason"]


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"\xff\xff garbage", {}, "not a valid google.protobuf.Int64Value"),
        (
            StringValue(value="x").SerializeToString(),
            {"micro-type": "google.protobuf.StringValue"},
            "expected google.protobuf.Int64Value, got google.protobuf.StringValue",
        ),
    ],
)
async def test_malformed_payload_is_dead_lettered_and_consuming_goes_on(
    broker: MemoryBroker,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: dict[str, str],
    reason: str,
) -> None:
    got, handle = collector()
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    async def dead_letters(envelope: Envelope) -> None:
        await dead.put(envelope)

    await broker.subscribe("numbers", typed(handle))  # type: ignore[arg-type]
    await broker.subscribe(dead_letter_topic("numbers"), dead_letters)
    bad = Envelope("numbers", body, codec.PROTOBUF, headers)
    with caplog.at_level(logging.WARNING, logger="micro.broker"):
        await broker.publish(bad)
        envelope = await asyncio.wait_for(dead.get(), 5)
    assert envelope.id == bad.id
    assert reason in envelope.headers["micro-dead-reason"]
    assert any(bad.id in r.getMessage() and "numbers" in r.getMessage() for r in caplog.records)
    await Publisher(broker, "numbers", Int64Value).publish(Int64Value(value=5))
    assert await drain(got, 1) == [5]  # the subscriber keeps consuming
    assert got.empty()  # and the bad message never reached the handler


def test_handler_needs_a_message_annotation() -> None:
    async def untyped(event, ctx) -> None:  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(TypeError, match="annotate the first parameter of"):
        typed(untyped)


async def test_service_subscribes_publishes_and_drains_on_stop() -> None:
    """``Service.stop`` returns only once the handler it found running has finished."""
    registry = MemoryRegistry()
    svc = micro.Service("billing", registry=registry, broker=MemoryBroker())
    idle = micro.Service("audit", registry=registry, broker=MemoryBroker())
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    @svc.subscribe("user.created", queue="billing")
    async def on_created(event: StringValue, ctx: micro.EventContext) -> None:
        started.set()
        await release.wait()
        finished.append(event.value)

    @idle.subscribe("user.created", queue="audit")
    async def on_audit(event: StringValue, ctx: micro.EventContext) -> None:
        pass

    await svc.start()
    await svc.publisher("user.created", StringValue).publish(StringValue(value="42"))
    await asyncio.wait_for(started.wait(), 5)
    await idle.start()
    stopping = await contract.not_returned_early(svc.stop(grace=0), idle.stop(grace=0), "stop")
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == ["42"]
