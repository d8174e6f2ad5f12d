"""Middleware on pub/sub: publish and deliver hooks in the typed layer, with what
became of each delivery (acked, retried, dead-lettered), on the memory broker and
on a real NATS server (core and JetStream)."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from google.protobuf.wrappers_pb2 import Int64Value
from nats_support import NatsServer, running

import micro
from micro.broker import Broker, MemoryBroker, Publisher, typed
from micro.broker.nats import NatsBroker

MAX_ATTEMPTS = 3
# value → deliveries that fail: 1 fails once, 2 always (dead-lettered after the last)
FAILS = {0: 0, 1: 1, 2: MAX_ATTEMPTS}
EXPECTED = {
    0: ["acked"],
    1: ["retried", "acked"],
    2: ["retried"] * (MAX_ATTEMPTS - 1) + ["dead-lettered"],
}

trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="")


class Record(micro.Middleware):
    """Stamps each publish with a header; sets ``trace`` from it for each delivery
    and records each delivery's attempt and disposition."""

    def __init__(self) -> None:
        self.published: list[micro.Outcome] = []
        self.delivered: dict[int, list[tuple[int, str | None]]] = {}
        self.done = asyncio.Event()

    def publish(self, message: micro.Outgoing) -> micro.Ending:
        message.headers["x-trace"] = f"t{message.message.value}"
        return self.published.append

    def deliver(self, message: micro.Incoming) -> micro.Ending:
        token = trace.set(message.headers["x-trace"])
        value, attempt = message.message.value, message.attempt

        def ending(outcome: micro.Outcome) -> None:
            trace.reset(token)
            self.delivered.setdefault(value, []).append((attempt, outcome.disposition))
            if sum(map(len, self.delivered.values())) == sum(map(len, EXPECTED.values())):
                self.done.set()

        return ending


async def exchange(broker: Broker, blocking: bool) -> Record:
    """Publish 0, 1 and 2 to a subscriber failing as ``FAILS`` says; returns the
    record once every delivery has ended."""
    topic = f"t-{uuid.uuid4().hex[:12]}"
    record = Record()
    seen: dict[int, int] = {}
    traces: list[str] = []

    def handle(event: Int64Value, ctx: micro.EventContext) -> None:
        traces.append(trace.get())
        assert ctx.headers["x-trace"] == trace.get()
        seen[event.value] = seen.get(event.value, 0) + 1
        if seen[event.value] <= FAILS[event.value]:
            raise RuntimeError(f"fails as asked ({seen[event.value]})")

    async def handle_async(event: Int64Value, ctx: micro.EventContext) -> None:
        handle(event, ctx)

    subscriber = typed(handle if blocking else handle_async, queue="q", middleware=[record])
    subscription = await broker.subscribe(topic, subscriber, "q")
    try:
        publisher = Publisher(broker, topic, Int64Value, middleware=[record])
        for value in FAILS:
            await publisher.publish(Int64Value(value=value))
        # Bounded by the backoffs (a few times 0.01 s) and delivery: 30 s is generous.
        await asyncio.wait_for(record.done.wait(), 30)
    finally:
        await subscription.unsubscribe()
    assert set(traces) == {"t0", "t1", "t2"}  # the deliver hook's contextvar, in the handler
    assert trace.get() == ""
    return record


def check(record: Record) -> None:
    assert [o.code for o in record.published] == [micro.Outcome().code] * 3
    for value, dispositions in EXPECTED.items():
        got = record.delivered[value]
        assert [d for _, d in got] == dispositions, value
        assert [a for a, _ in got] == list(range(1, len(dispositions) + 1)), value


@pytest.mark.parametrize("blocking", [False, True], ids=["async-handler", "def-handler"])
async def test_memory_broker_dispositions(blocking: bool) -> None:
    broker = MemoryBroker(max_attempts=MAX_ATTEMPTS, backoff=0.01)
    check(await exchange(broker, blocking))


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with running(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(params=["nats", "jetstream"])
async def nats_broker(
    request: pytest.FixtureRequest, nats_server: NatsServer
) -> AsyncIterator[NatsBroker]:
    broker = NatsBroker(
        nats_server.url,
        jetstream=request.param == "jetstream",
        max_attempts=MAX_ATTEMPTS,
        backoff=0.01,
    )
    await broker.connect()
    yield broker
    await broker.close()


@pytest.mark.backend
async def test_nats_broker_dispositions(nats_broker: NatsBroker) -> None:
    check(await exchange(nats_broker, blocking=False))


async def test_a_service_hooks_its_publishers_and_subscribers() -> None:
    record = Record()
    broker = MemoryBroker(max_attempts=MAX_ATTEMPTS, backoff=0.01)
    config = micro.Config(registry="memory")
    svc = micro.Service("pubsub", broker=broker, middleware=[record], config=config)
    seen = asyncio.Event()

    @svc.subscribe("numbers")
    async def numbers(event: Int64Value, ctx: micro.EventContext) -> None:
        assert trace.get() == "t0"
        seen.set()

    await svc.start()
    try:
        await svc.publisher("numbers", Int64Value).publish(Int64Value(value=0))
        await asyncio.wait_for(seen.wait(), 30)  # one in-memory delivery: 30 s is generous
    finally:
        await svc.stop(grace=0)
    assert len(record.published) == 1
    assert record.delivered[0] == [(1, "acked")]
