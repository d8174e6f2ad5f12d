"""The zero-setup grpc broker: services deliver to each other's servers over loopback."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import contract
import pytest
from contract import *  # noqa: F403  (the contract every backend passes, run here)
from google.protobuf.wrappers_pb2 import Int64Value

import micro
from micro import codec
from micro.broker import Broker, BrokerError, Envelope, dead_letter_topic
from micro.broker.peer import GrpcBroker, entry_name
from micro.delivery_micro import DeliveryClient
from micro.delivery_pb2 import Delivered
from micro.delivery_pb2 import Envelope as WireEnvelope
from micro.logs import BURST
from micro.registry import MemoryRegistry

CONFIG = micro.Config(registry="memory", broker="grpc", register_ttl=30, register_interval=10)
Start = Callable[[str], Awaitable[micro.Service]]


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def service(registry: MemoryRegistry) -> AsyncIterator[Callable[[str], micro.Service]]:
    """``service(name)`` builds one on the grpc broker; started ones stop after the test."""
    made: list[micro.Service] = []

    def make(name: str) -> micro.Service:
        svc = micro.Service(name, registry=registry, config=CONFIG)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        await svc.stop(grace=0)


def counting(svc: micro.Service, topic: str, queue: str | None = None) -> asyncio.Queue[int]:
    got: asyncio.Queue[int] = asyncio.Queue()

    @svc.subscribe(topic, queue=queue)
    async def handle(event: Int64Value, ctx: micro.EventContext) -> None:
        await got.put(event.value)

    return got


async def take(queue: asyncio.Queue[int], count: int) -> list[int]:
    return sorted([await asyncio.wait_for(queue.get(), 5) for _ in range(count)])


@pytest.fixture
async def open_broker(registry: MemoryRegistry) -> AsyncIterator[contract.OpenBroker]:
    """The grpc brokers of services started on one registry, as the contract wants
    them: 3 attempts, a short backoff. Stopped and closed after the test."""
    made: list[micro.Service] = []

    async def open_one() -> Broker:
        broker = GrpcBroker(registry, max_attempts=3, backoff=0.01)
        svc = micro.Service(f"node-{len(made)}", registry=registry, broker=broker, config=CONFIG)
        made.append(svc)
        await svc.start()
        return broker

    yield open_one
    for svc in made:
        await svc.stop(grace=0)
        await svc.broker.close()


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# The contract every backend shows.


async def test_unsubscribe_drains(open_broker: contract.OpenBroker, topic: str) -> None:
    await contract.check_unsubscribe_drains(open_broker, topic)


# Services on the grpc broker.


async def test_default_broker_is_grpc_and_served(service: Callable[[str], micro.Service]) -> None:
    svc = service("a")
    assert isinstance(svc.broker, GrpcBroker)
    assert "micro.Delivery" in {s.name for s in svc.server.services}


async def test_broadcast_and_queue_across_services(
    service: Callable[[str], micro.Service], registry: MemoryRegistry
) -> None:
    audit_a, audit_b, worker_a, worker_b, publisher = (
        service(n) for n in ("audit-a", "audit-b", "worker-a", "worker-b", "publisher")
    )
    broadcast = [counting(audit_a, "numbers"), counting(audit_b, "numbers")]
    workers = [counting(s, "numbers", queue="workers") for s in (worker_a, worker_b)]
    for svc in (audit_a, audit_b, worker_a, worker_b, publisher):
        await svc.start()
    entries = await registry.get_service(entry_name("numbers"))
    assert len([n for e in entries for n in e.nodes]) == 4  # 2 broadcast + 2 queue members
    numbers = publisher.publisher("numbers", Int64Value)
    for i in range(20):
        await numbers.publish(Int64Value(value=i))
    for got in broadcast:
        assert await take(got, 20) == list(range(20))  # every subscriber, every message
    await worker_a.stop()  # drains its handlers
    await worker_b.stop()
    split = [[q.get_nowait() for _ in range(q.qsize())] for q in workers]
    assert all(split)
    assert sorted(split[0] + split[1]) == list(range(20))  # split, no duplicates


@pytest.mark.parametrize("content_type", [codec.PROTOBUF, codec.JSON])
async def test_typed_round_trip_between_services(
    service: Callable[[str], micro.Service], content_type: str
) -> None:
    sub, pub = service("sub"), service("pub")
    got: asyncio.Queue[tuple[Int64Value, micro.EventContext]] = asyncio.Queue()

    @sub.subscribe("values")
    async def handle(event: Int64Value, ctx: micro.EventContext) -> None:
        await got.put((event, ctx))

    await sub.start()
    await pub.start()
    sent = await pub.publisher("values", Int64Value, content_type=content_type).publish(
        Int64Value(value=-5), headers={"k": "v"}
    )
    event, ctx = await asyncio.wait_for(got.get(), 5)
    assert event.value == -5
    assert (ctx.id, ctx.headers["k"], ctx.envelope.content_type) == (sent, "v", content_type)


async def test_retries_then_dead_letter(service: Callable[[str], micro.Service]) -> None:
    sub, pub = service("sub"), service("pub")
    sub.broker.redelivery.backoff = 0.001  # type: ignore[attr-defined]
    attempts: dict[int, list[int]] = {1: [], 2: []}
    recovered = asyncio.Event()
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    @sub.subscribe("jobs")
    async def handle(event: Int64Value, ctx: micro.EventContext) -> None:
        attempts[event.value].append(ctx.attempt)
        if event.value == 1 and ctx.attempt == 3:
            recovered.set()
            return
        raise RuntimeError("not now")

    @sub.subscribe(dead_letter_topic("jobs"))
    async def dead_letters(event: Int64Value, ctx: micro.EventContext) -> None:
        await dead.put(ctx.envelope)

    await sub.start()
    await pub.start()
    jobs = pub.publisher("jobs", Int64Value)
    await jobs.publish(Int64Value(value=1))  # fails twice, then succeeds
    await jobs.publish(Int64Value(value=2))  # always fails
    await asyncio.wait_for(recovered.wait(), 5)
    envelope = await asyncio.wait_for(dead.get(), 10)
    assert attempts[1] == [1, 2, 3]
    assert attempts[2] == [1, 2, 3, 4, 5]
    assert Int64Value.FromString(envelope.body).value == 2
    assert "RuntimeError: not now" in envelope.headers["micro-dead-reason"]


async def test_stop_waits_for_running_handlers(service: Callable[[str], micro.Service]) -> None:
    """``Service.stop`` returns only once the handlers it found running have finished."""
    sub, pub, idle = service("sub"), service("pub"), service("idle")
    counting(idle, "other", queue="workers")  # as sub, but nothing is published to it
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    @sub.subscribe("jobs", queue="workers")
    async def blocked(event: Int64Value, ctx: micro.EventContext) -> None:
        started.set()
        await release.wait()
        finished.append(event.value)

    await sub.start()
    await pub.start()
    await pub.publisher("jobs", Int64Value).publish(Int64Value(value=1))
    await asyncio.wait_for(started.wait(), 5)
    await idle.start()
    stopping = await contract.not_returned_early(sub.stop(grace=0), idle.stop(grace=0), "stop")
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [1]


async def test_stopped_subscriber_leaves_the_registry(
    service: Callable[[str], micro.Service], registry: MemoryRegistry
) -> None:
    sub = service("sub")
    counting(sub, "numbers")
    await sub.start()
    assert await registry.get_service(entry_name("numbers"))
    await sub.stop()
    assert await registry.get_service(entry_name("numbers")) == []


async def test_publish_without_subscribers_is_dropped_and_said(
    service: Callable[[str], micro.Service], caplog: pytest.LogCaptureFixture
) -> None:
    """Said once per topic, until a subscriber has received one again."""
    pub, sub = service("pub"), service("sub")
    nobody = pub.publisher("nobody", Int64Value)
    with pytest.raises(BrokerError, match=r"not connected: start the service first \(await"):
        await nobody.publish(Int64Value(value=0))
    await pub.start()
    caplog.set_level(logging.WARNING, "micro.broker")
    first = await nobody.publish(Int64Value(value=1))
    await nobody.publish(Int64Value(value=2))
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"no subscriber of nobody found: message {first} not delivered "
        "(nor later ones until one subscribes)"
    ]
    got = counting(sub, "nobody")
    await sub.start()
    await seen_by(pub, "nobody", 1)
    await nobody.publish(Int64Value(value=3))
    assert await take(got, 1) == [3]
    await sub.stop()
    await seen_by(pub, "nobody", 0)
    again = await nobody.publish(Int64Value(value=4))
    assert [r.getMessage() for r in caplog.records][1:] == [
        f"no subscriber of nobody found: message {again} not delivered "
        "(nor later ones until one subscribes)"
    ]


async def seen_by(svc: micro.Service, topic: str, subscribers: int) -> None:
    """Wait until ``svc``'s registry cache, which follows the registry's watch, lists
    that many subscribers of ``topic``: 5 s at most, a memory registry's events are
    handed over at once."""
    for _ in range(500):
        entries = svc.client.registry.cached(entry_name(topic)) or []
        if sum(len(e.nodes) for e in entries) == subscribers:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{svc.name} never saw {subscribers} subscribers of {topic}")


async def test_a_node_without_the_subscription_refuses_it(
    service: Callable[[str], micro.Service],
) -> None:
    """A publisher whose registry cache is behind an unsubscribe is told NOT_FOUND, so
    it tries another member of the queue instead of losing the message."""
    node, pub = service("node"), service("pub")
    counting(node, "numbers")  # broadcast only: no member of queue "workers"
    await node.start()
    await pub.start()
    delivery = DeliveryClient(entry_name("numbers"), pub.client)
    wire = WireEnvelope(id="m1", topic="numbers", body=b"", queue="workers")
    with pytest.raises(micro.errors.NotFound, match=r"no subscription to numbers \(queue 'wor"):
        await delivery.deliver(wire, options=micro.CallOptions(address=node.address))
    wire.queue = ""
    assert await delivery.deliver(wire, options=micro.CallOptions(address=node.address)) == (
        Delivered()
    )


async def test_a_flood_of_garbage_leaves_a_bounded_log(
    service: Callable[[str], micro.Service], caplog: pytest.LogCaptureFixture
) -> None:
    """Envelopes that cannot be decoded, sent straight to a subscriber's delivery
    endpoint, are each dead-lettered; the log says so for a burst, then at DEBUG."""
    node, pub = service("node"), service("pub")
    counting(node, "numbers")
    dead: asyncio.Queue[str] = asyncio.Queue()

    @node.subscribe(dead_letter_topic("numbers"))
    async def bury(envelope: Envelope, ctx: micro.EventContext) -> None:
        await dead.put(envelope.id)

    await node.start()
    await pub.start()
    caplog.set_level(logging.WARNING, "micro.broker")
    delivery = DeliveryClient(entry_name("numbers"), pub.client)
    sent = 20 * BURST
    for i in range(sent):
        garbage = WireEnvelope(id=f"g{i}", topic="numbers", body=b"\xff\xff\xff")
        await delivery.deliver(garbage, options=micro.CallOptions(address=node.address))
    assert len({await asyncio.wait_for(dead.get(), 5) for _ in range(sent)}) == sent
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == BURST + 1, said
    assert said[0].startswith("dead-lettering message g0 of numbers: ")
    assert re.fullmatch(r"further failed deliveries are logged at DEBUG for \d+ s", said[-1])
