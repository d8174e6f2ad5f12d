"""A backend module for the broker driver over ``MemoryBroker``, for its tests.

There is no raw memory broker: "raw" here is the same broker fed envelopes with an
envelope handler (no typed layer), which is enough to drive every code path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf.wrappers_pb2 import Int64Value

from micro.broker import Envelope, EventContext, MemoryBroker, Publisher, typed
from micro.codec import PROTOBUF

NAME = "memory"
TOPIC = "bench.memory"


@contextmanager
def server() -> Iterator[str]:
    yield "in-process"


class Receipts:
    """Publish times by message number, and the latency of each one handled."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sent: list[float] = [0.0] * count
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def handled(self, number: int) -> None:
        self.latencies.append(time.perf_counter() - self.sent[number])
        if len(self.latencies) == self.count:
            self.done.set()


async def run_micro(address: str, count: int) -> tuple[float, list[float]]:
    broker = MemoryBroker()
    receipts = Receipts(count)

    async def handle(message: Int64Value, ctx: EventContext) -> None:
        receipts.handled(message.value)

    await broker.subscribe(TOPIC, typed(handle))
    publisher = Publisher(broker, TOPIC, Int64Value)
    began = time.perf_counter()
    for number in range(count):
        receipts.sent[number] = time.perf_counter()
        await publisher.publish(Int64Value(value=number))
    await receipts.done.wait()
    elapsed = time.perf_counter() - began
    await broker.close()
    return elapsed, receipts.latencies


async def run_raw(address: str, count: int) -> tuple[float, list[float]]:
    broker = MemoryBroker()
    receipts = Receipts(count)

    async def handle(envelope: Envelope) -> None:
        receipts.handled(int.from_bytes(envelope.body, "big"))

    await broker.subscribe(TOPIC, handle)
    began = time.perf_counter()
    for number in range(count):
        receipts.sent[number] = time.perf_counter()
        await broker.publish(Envelope(TOPIC, number.to_bytes(8, "big"), PROTOBUF))
    await receipts.done.wait()
    elapsed = time.perf_counter() - began
    await broker.close()
    return elapsed, receipts.latencies
