"""RabbitBroker against aio-pika used by hand, with the same delivery guarantees.

Both sides use one connection with a publishing channel (publisher confirms: each
publish waits for the server's ack, persistent messages, one at a time) and a
consuming channel (QoS prefetch 64, a message acked once handled), on an exchange and
queue of their own that are deleted after the run. Variants: ``rabbitmq`` (a durable
queue: a queue group) and ``rabbitmq-broadcast`` (an exclusive auto-delete queue).
Micro carries a typed ``Int64Value`` holding ``time.perf_counter_ns()``; raw carries
the same 8 bytes. The server is the machine's own at 127.0.0.1:5672 (guest).

    python -m bench.broker_rabbitmq [COUNT]   # one run of each side, by hand
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
import uuid
from collections.abc import Iterator

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.wrappers_pb2 import Int64Value

from micro.broker import EventContext, Publisher, typed
from micro.broker.rabbitmq import RabbitBroker

NAME = "rabbitmq"
ADDRESS = "amqp://guest:guest@127.0.0.1:5672/"
PREFETCH = 64  # RabbitBroker's default
QUEUE = "bench"


@contextlib.contextmanager
def server() -> Iterator[str]:
    """The system's RabbitMQ (a Debian service; the bench does not start its own)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", 5672)) != 0:
            raise RuntimeError("no RabbitMQ listening on 127.0.0.1:5672")
    yield ADDRESS


class Arrivals:
    """Publish-to-handle latencies; ``complete`` is set at the ``count``-th message."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.latencies: list[float] = []
        self.last_s = 0.0
        self.complete = asyncio.Event()

    def arrived(self, sent_ns: int) -> None:
        now_ns = time.perf_counter_ns()
        self.latencies.append((now_ns - sent_ns) / 1e9)
        if len(self.latencies) == self.count:
            self.last_s = now_ns / 1e9
            self.complete.set()


async def _micro(address: str, count: int, queue: str | None) -> tuple[float, list[float]]:
    exchange, topic = f"bench-{uuid.uuid4().hex}", "bench.numbers"
    arrivals = Arrivals(count)

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        arrivals.arrived(event.value)

    broker = RabbitBroker(address, exchange=exchange, prefetch=PREFETCH)
    await broker.connect()
    try:
        await broker.subscribe(topic, typed(handle), queue=queue)
        numbers = Publisher(broker, topic, Int64Value)
        began = time.perf_counter()
        for _ in range(count):
            await numbers.publish(Int64Value(value=time.perf_counter_ns()))
        await arrivals.complete.wait()
    finally:
        await broker.close()
        await _delete(address, exchange, f"{exchange}.{topic}.{queue}" if queue else None)
    return arrivals.last_s - began, arrivals.latencies


async def _raw(address: str, count: int, durable: bool) -> tuple[float, list[float]]:
    exchange_name, topic = f"bench-raw-{uuid.uuid4().hex}", "bench.numbers"
    name = f"{exchange_name}.{topic}.{QUEUE if durable else uuid.uuid4().hex}"
    arrivals = Arrivals(count)
    connection = await aio_pika.connect_robust(address)
    try:
        publishing = await connection.channel()  # publisher confirms
        exchange = await publishing.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        consuming = await connection.channel(publisher_confirms=False)
        await consuming.set_qos(prefetch_count=PREFETCH)
        if durable:
            queue = await consuming.declare_queue(name, durable=True)
        else:
            queue = await consuming.declare_queue(name, exclusive=True, auto_delete=True)
        await queue.bind(exchange_name, routing_key=topic)

        async def handle(message: AbstractIncomingMessage) -> None:
            arrivals.arrived(int.from_bytes(message.body, "little"))
            await message.ack()

        await queue.consume(handle)
        began = time.perf_counter()
        for _ in range(count):
            body = time.perf_counter_ns().to_bytes(8, "little")
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, topic, mandatory=False)
        await arrivals.complete.wait()
    finally:
        await connection.close()
        await _delete(address, exchange_name, name if durable else None)
    return arrivals.last_s - began, arrivals.latencies


async def _delete(address: str, exchange: str, queue: str | None) -> None:
    connection = await aio_pika.connect(address)
    channel = await connection.channel()
    if queue is not None:
        await channel.queue_delete(queue)
    await channel.exchange_delete(exchange)
    await connection.close()


async def run_micro(address: str, count: int) -> tuple[float, list[float]]:
    return await _micro(address, count, queue=QUEUE)


async def run_raw(address: str, count: int) -> tuple[float, list[float]]:
    return await _raw(address, count, durable=True)


async def run_micro_broadcast(address: str, count: int) -> tuple[float, list[float]]:
    return await _micro(address, count, queue=None)


async def run_raw_broadcast(address: str, count: int) -> tuple[float, list[float]]:
    return await _raw(address, count, durable=False)


VARIANTS = [
    (NAME, run_micro, run_raw),
    (f"{NAME}-broadcast", run_micro_broadcast, run_raw_broadcast),
]


async def _by_hand(address: str, count: int) -> None:
    for name, micro, raw in VARIANTS:
        for side, run in (("micro", micro), ("raw", raw)):
            elapsed, latencies = await run(address, count)
            p50 = sorted(latencies)[len(latencies) // 2] * 1e3
            print(f"{name:18} {side:5} {count / elapsed:8.0f} msg/s  p50 {p50:.2f} ms")


if __name__ == "__main__":
    with server() as url:
        asyncio.run(_by_hand(url, int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
