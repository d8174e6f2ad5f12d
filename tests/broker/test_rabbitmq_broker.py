"""RabbitBroker against the RabbitMQ server of this machine (127.0.0.1:5672, guest).

Each test has its own topic and (but for the at-least-once test, whose consumer
process uses the default ``micro`` exchange) its own exchange; the queues a test may
have declared and its exchange are deleted at its end, so the server is left clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import contract
import pytest
from contract import *  # noqa: F403  (the contract every backend passes, run here)
from google.protobuf.wrappers_pb2 import Int64Value

import micro
from micro import codec
from micro.broker import Broker, BrokerError, Envelope, EventContext, Publisher, typed
from micro.broker.rabbitmq import RabbitBroker, incoming
from micro.registry import MemoryRegistry

pytestmark = pytest.mark.backend

ADDRESS = "amqp://guest:guest@127.0.0.1:5672/"
# every queue name the checks and tests below subscribe with
QUEUES = ("workers", "flaky", "broken", "dlq", "numbers")
WAIT = 10.0


@pytest.fixture(scope="module")
def rabbit() -> str:
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", 5672)) != 0:
            pytest.skip("no RabbitMQ listening on 127.0.0.1:5672 (apt install rabbitmq-server)")
    return ADDRESS


@pytest.fixture
def topic() -> str:
    return f"test.{uuid.uuid4().hex[:12]}.events"  # dotted, like real topics


@pytest.fixture
def exchange() -> str:
    return f"micro-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def admin(
    rabbit: str, exchange: str, topic: str
) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain aio-pika channel; at the end, deletes what the test may have declared."""
    connection = await aio_pika.connect(rabbit)
    channel = await connection.channel()
    yield channel
    for name in (topic, f"{topic}.dlq"):
        for queue in QUEUES:
            await channel.queue_delete(f"{exchange}.{name}.{queue}")
    if exchange != "micro":  # the default one may be in use by others
        await channel.exchange_delete(exchange)
    await connection.close()


@pytest.fixture
async def open_broker(
    rabbit: str, exchange: str, admin: aio_pika.abc.AbstractChannel
) -> AsyncIterator[contract.OpenBroker]:
    made: list[RabbitBroker] = []

    async def open_one() -> Broker:
        broker = RabbitBroker(rabbit, exchange=exchange, max_attempts=3, backoff=0.01)
        made.append(broker)
        await broker.connect()
        return broker

    yield open_one
    for broker in made:
        await broker.close()


# -- the contract every backend passes -------------------------------------------------


async def test_unsubscribe_drains(
    open_broker: contract.OpenBroker,
    admin: aio_pika.abc.AbstractChannel,
    exchange: str,
    topic: str,
) -> None:
    kept = queue_outstanding(admin, f"{exchange}.{topic}.workers")
    await contract.check_unsubscribe_drains(open_broker, topic, kept)


@pytest.mark.parametrize("exchange", ["micro"])  # the consumer process's default
async def test_at_least_once(
    open_broker: contract.OpenBroker,
    admin: aio_pika.abc.AbstractChannel,
    rabbit: str,
    topic: str,
    record_property: Callable[[str, object], None],
) -> None:
    # window: the consumer's prefetch (64), the QoS limit of unacked messages the
    # server holds for it.
    summary = await contract.check_at_least_once(
        open_broker,
        "rabbitmq",
        rabbit,
        topic,
        queue_outstanding(admin, f"micro.{topic}.workers"),
        window=64,
    )
    record_property(contract.SUMMARY, f"rabbitmq: {summary}")


def queue_outstanding(admin: aio_pika.abc.AbstractChannel, name: str) -> contract.Outstanding:
    """Messages ready in queue ``name``; those unacked too once nobody consumes it
    (AMQP tells no more)."""

    async def outstanding() -> int:
        queue = await admin.declare_queue(name, passive=True)
        count = queue.declaration_result.message_count
        assert count is not None  # a passive declare's answer carries it
        return count

    return outstanding


# -- RabbitMQ's own --------------------------------------------------------------------


async def test_unreachable_address_fails_fast_naming_it(unused_port: int) -> None:
    """A refused connection fails at once. With a connect timeout past WAIT, failing
    within WAIT shows the broker gave up on the refusal rather than waiting out the
    timeout or reconnecting (which it does once connected)."""
    broker = RabbitBroker(
        f"amqp://guest:s3cret@127.0.0.1:{unused_port}/", connect_timeout=10 * WAIT
    )
    with pytest.raises(BrokerError, match=f"127.0.0.1:{unused_port}/: (?!no answer)") as caught:
        await asyncio.wait_for(broker.connect(), WAIT)
    assert "s3cret" not in str(caught.value)


async def test_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts TCP (the kernel does), never speaks AMQP
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        broker = RabbitBroker(f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout=0.3)
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port}.*no answer in 0.3 s"):
            await asyncio.wait_for(broker.connect(), WAIT)


async def test_wrong_credentials_are_a_clear_error(rabbit: str) -> None:
    broker = RabbitBroker("amqp://nobody:not-the-password@127.0.0.1:5672/")
    with pytest.raises(
        BrokerError, match=r"amqp://nobody:\*\*\*@127.0.0.1:5672/: login refused"
    ) as e:
        await broker.connect()
    assert "not-the-password" not in str(e.value)


async def test_bad_arguments_are_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match=r"'127\.0\.0\.1:5672' is not an AMQP URL"):
        RabbitBroker("127.0.0.1:5672")
    with pytest.raises(ValueError, match="prefetch=0"):
        RabbitBroker(prefetch=0)
    with pytest.raises(BrokerError, match="not connected"):
        await RabbitBroker().publish(Envelope("t", b"", codec.PROTOBUF))


async def test_wildcard_topics_are_refused(open_broker: contract.OpenBroker) -> None:
    broker = await open_broker()
    for topic in ("orders.*", "#.orders", ""):
        with pytest.raises(BrokerError, match=r"non-empty and without '\*' or '#' words"):
            await broker.subscribe(topic, _ignore)


async def test_a_topic_does_not_get_its_dead_letters(
    open_broker: contract.OpenBroker, topic: str
) -> None:
    """``user.created`` binds exactly: nothing of ``user.created.dlq`` reaches it."""
    broker = await open_broker()
    got: dict[str, asyncio.Queue[Envelope]] = {
        topic: asyncio.Queue(),
        f"{topic}.dlq": asyncio.Queue(),
    }
    subs = [await broker.subscribe(name, got[name].put) for name in got]
    await broker.publish(Envelope(f"{topic}.dlq", b"dead", codec.PROTOBUF))
    await broker.publish(Envelope(topic, b"live", codec.PROTOBUF))
    assert (await asyncio.wait_for(got[topic].get(), WAIT)).body == b"live"
    assert (await asyncio.wait_for(got[f"{topic}.dlq"].get(), WAIT)).body == b"dead"
    for sub in subs:
        await sub.unsubscribe()
    assert got[topic].empty()
    assert got[f"{topic}.dlq"].empty()


async def test_a_queue_keeps_messages_while_no_consumer_runs(
    open_broker: contract.OpenBroker, topic: str
) -> None:
    broker = await open_broker()
    got, handle = contract.counter()
    sub = await broker.subscribe(topic, typed(handle), queue="workers")
    await sub.unsubscribe()
    numbers = Publisher(broker, topic, Int64Value)
    for i in range(5):
        await numbers.publish(Int64Value(value=i))  # confirmed: in the queue now
    await broker.subscribe(topic, typed(handle), queue="workers")
    assert sorted(await contract.take(got, 5)) == list(range(5))


_HOLDER = """
import asyncio, sys, aio_pika
async def main():
    connection = await aio_pika.connect(sys.argv[1])
    channel = await connection.channel()
    queue = await channel.declare_queue(sys.argv[2], durable=True)
    async def hold(message):
        print(message.body.decode(), flush=True)  # never acked
    await queue.consume(hold)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def holding(
    open_broker: contract.OpenBroker, rabbit: str, exchange: str, topic: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A consumer process of queue ``workers`` holding one published message unacked."""
    broker = await open_broker()
    await broker.subscribe(topic, _ignore, queue="workers")  # declares and binds the queue
    await broker.close()
    holder = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _HOLDER, rabbit, f"{exchange}.{topic}.workers"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), WAIT)).strip() == b"ready"
        publisher = await open_broker()
        await publisher.publish(Envelope(topic, b"held", codec.PROTOBUF))
        line = await asyncio.wait_for(holder.stdout.readline(), WAIT)
        assert line.strip() == b"held"  # the holder has it, unacked
        yield holder
    finally:
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        await holder.wait()


async def test_killed_consumer_messages_go_to_another_at_once(
    open_broker: contract.OpenBroker, rabbit: str, exchange: str, topic: str
) -> None:
    """A consumer killed with -9 holding a message: RabbitMQ hands it to the next one."""
    async with holding(open_broker, rabbit, exchange, topic) as holder:
        got: asyncio.Queue[Envelope] = asyncio.Queue()
        await (await open_broker()).subscribe(topic, got.put, queue="workers")
        assert got.empty()
        holder.kill()
        # A missed heartbeat (60 s, aiormq's and RabbitMQ's default) is far past WAIT:
        # it comes back because the server saw the connection close, as it does at once.
        envelope = await asyncio.wait_for(got.get(), WAIT)
        assert (envelope.body, envelope.attempt) == (b"held", 2)  # counted on: redelivered


async def test_a_message_its_consumers_died_on_too_often_is_dead_lettered(
    rabbit: str, exchange: str, topic: str, open_broker: contract.OpenBroker
) -> None:
    broker = RabbitBroker(rabbit, exchange=exchange, max_attempts=1)
    dead: asyncio.Queue[Envelope] = asyncio.Queue()
    handled: list[Envelope] = []

    async def handle(envelope: Envelope) -> None:
        handled.append(envelope)

    async with holding(open_broker, rabbit, exchange, topic) as holder:
        await broker.connect()
        try:
            await broker.subscribe(f"{topic}.dlq", dead.put, queue="dlq")
            await broker.subscribe(topic, handle, queue="workers")
            holder.kill()
            envelope = await asyncio.wait_for(dead.get(), WAIT)
        finally:
            await broker.close()
    assert envelope.body == b"held"
    assert "delivered 2 times, max_attempts=1" in envelope.headers["micro-dead-reason"]
    assert handled == []


async def test_prefetch_bounds_the_handlers_in_flight(
    rabbit: str, exchange: str, topic: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    broker = RabbitBroker(rabbit, exchange=exchange, prefetch=4)
    await broker.connect()
    running = peak = 0
    four, release = asyncio.Event(), asyncio.Event()
    done: asyncio.Queue[str] = asyncio.Queue()

    async def hold(envelope: Envelope) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 4:
            four.set()
        await release.wait()
        running -= 1
        await done.put(envelope.id)

    try:
        await broker.subscribe(topic, hold, queue="workers")
        for i in range(20):
            await broker.publish(Envelope(topic, b"%d" % i, codec.PROTOBUF))
        await asyncio.wait_for(four.wait(), WAIT)
        queue = await admin.declare_queue(f"{exchange}.{topic}.workers", passive=True)
        assert queue.declaration_result.message_count == 16  # held back by the server
        release.set()
        assert len({await asyncio.wait_for(done.get(), WAIT) for _ in range(20)}) == 20
        assert peak == 4
    finally:
        await broker.close()


async def test_a_foreign_message_without_envelope_properties(
    open_broker: contract.OpenBroker,
    admin: aio_pika.abc.AbstractChannel,
    exchange: str,
    topic: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Published by another client: no id, content type, timestamp; odd header types.
    Handled when it parses, dead-lettered with a log line when it does not."""
    broker = await open_broker()
    got: asyncio.Queue[tuple[int, EventContext]] = asyncio.Queue()
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        await got.put((event.value, ctx))

    await broker.subscribe(f"{topic}.dlq", dead.put, queue="dlq")
    await broker.subscribe(topic, typed(handle), queue="numbers")
    foreign = await admin.get_exchange(exchange)
    with caplog.at_level(logging.WARNING, logger="micro.broker"):
        await foreign.publish(aio_pika.Message(b"\xff\xff"), routing_key=topic)
        envelope = await asyncio.wait_for(dead.get(), WAIT)
    assert envelope.body == b"\xff\xff"
    assert "not a valid google.protobuf.Int64Value" in envelope.headers["micro-dead-reason"]
    assert any(envelope.id in r.getMessage() and topic in r.getMessage() for r in caplog.records)
    body = Int64Value(value=9).SerializeToString()
    sent = time.time()
    await foreign.publish(aio_pika.Message(body, headers={"n": 5, "on": True}), routing_key=topic)
    value, ctx = await asyncio.wait_for(got.get(), WAIT)
    assert (value, ctx.headers["n"], ctx.headers["on"], ctx.attempt) == (9, "5", "True", 1)
    assert ctx.id
    assert sent <= ctx.timestamp <= time.time()  # no timestamp property: the time of arrival


async def test_a_dead_letter_nobody_keeps_is_logged_and_acked(
    rabbit: str,
    exchange: str,
    topic: str,
    admin: aio_pika.abc.AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = RabbitBroker(rabbit, exchange=exchange, max_attempts=1)
    await broker.connect()
    failed = asyncio.Event()

    async def broken(envelope: Envelope) -> None:
        failed.set()
        raise RuntimeError("always")

    try:
        sub = await broker.subscribe(topic, broken, queue="broken")
        sent = Envelope(topic, b"x", codec.PROTOBUF)
        with caplog.at_level(logging.ERROR, logger="micro.broker"):
            await broker.publish(sent)
            await asyncio.wait_for(failed.wait(), WAIT)
            await sub.unsubscribe()  # returns once the handling, dead letter and ack are done
        assert any(
            f"dead letter {sent.id} dropped: no queue is bound to {topic}.dlq" in r.getMessage()
            for r in caplog.records
        )
        queue = await admin.declare_queue(f"{exchange}.{topic}.broken", passive=True)
        assert queue.declaration_result.message_count == 0  # acked, not back in the queue
    finally:
        await broker.close()


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = time.monotonic() + WAIT
    while (message := await queue.get(fail=False)) is None:
        assert time.monotonic() < deadline, "the requeued message did not come back"
        await asyncio.sleep(0.01)  # polling the server: a requeue has no event to await
    return message


@pytest.mark.parametrize(
    ("arguments", "attempts"),
    [
        pytest.param({}, [1, 2, 2], id="classic-redelivered-flag"),
        pytest.param({"x-queue-type": "quorum"}, [1, 2, 3], id="quorum-delivery-count"),
    ],
)
async def test_the_attempt_number_starts_from_what_the_server_knows(
    admin: aio_pika.abc.AbstractChannel,
    exchange: str,
    topic: str,
    arguments: dict[str, Any],
    attempts: list[int],
) -> None:
    name = f"{exchange}.{topic}.numbers"
    queue = await admin.declare_queue(name, durable=True, arguments=arguments)
    await admin.default_exchange.publish(aio_pika.Message(b"x", message_id="m"), routing_key=name)
    seen = []
    for _ in attempts:
        message = await _get(queue)
        seen.append(incoming(message, topic).attempt)
        await message.nack(requeue=True)
    assert seen == attempts


async def test_a_service_publishes_and_subscribes_through_rabbitmq(
    rabbit: str, exchange: str, topic: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    broker = RabbitBroker(rabbit, exchange=exchange)
    svc = micro.Service("billing", registry=MemoryRegistry(), broker=broker)
    got: asyncio.Queue[int] = asyncio.Queue()

    @svc.subscribe(topic, queue="workers")
    async def on_number(event: Int64Value, ctx: micro.EventContext) -> None:
        await got.put(event.value)

    await svc.start()
    try:
        await svc.publisher(topic, Int64Value).publish(Int64Value(value=3))
        assert await asyncio.wait_for(got.get(), WAIT) == 3
    finally:
        await svc.stop(grace=0)
        await broker.close()


async def _ignore(envelope: Envelope) -> None:
    pass
