"""The Redis Streams broker against redis-py asyncio doing the same by hand.

Three variants on one redis-server of the bench's own: ``redis`` (a queue: a consumer
group, XREADGROUP, XACK of what was handled), ``redis-typed`` (the same, but raw
writes and reads by hand the entry the broker makes: message id, serialized proto,
headers naming its type) and ``redis-broadcast`` (plain XREAD, no acks). Each side
publishes sequentially, one XADD per message with the same approximate MAXLEN, and
reads with one blocking connection, up to 64 entries a read. Micro carries a typed
``Int64Value`` holding ``time.perf_counter_ns()``; raw carries the same 8 bytes
(``redis-typed``: the same proto). Every run uses a new stream, deleted afterwards.

    python -m bench.broker_redis [COUNT]   # one run of each side, by hand
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from google.protobuf.wrappers_pb2 import Int64Value
from redis.asyncio import Redis

from bench.environment import ROOT
from micro.broker import EventContext, Publisher, typed
from micro.broker.redis import RedisBroker

NAME = "redis"
GROUP = "bench"
BATCH = 64  # entries per read, as RedisBroker's default concurrency
MAXLEN = 100_000  # RedisBroker's default trimming
HEADERS = json.dumps({"micro-type": Int64Value.DESCRIPTOR.full_name}, separators=(",", ":"))


def _fixture() -> ModuleType:
    """The test suite's throwaway redis-server (loopback, free port, no persistence)."""
    path = ROOT / "tests" / "support" / "redis_fixture.py"
    spec = importlib.util.spec_from_file_location("redis_fixture", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def server() -> Iterator[str]:
    fixture = _fixture()
    if not fixture.available():
        raise RuntimeError(f"{fixture.BINARY} is not installed")
    with fixture.redis_server() as url:
        yield url


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


async def _micro(address: str, count: int, queue: str | None) -> tuple[float, list[float]]:
    stream_topic = f"bench-{uuid.uuid4().hex}"
    receipts = Receipts(count)

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        receipts.handled(event.value)

    subscriber, publisher = RedisBroker(address), RedisBroker(address)
    await subscriber.connect()
    await publisher.connect()
    try:
        await subscriber.subscribe(stream_topic, typed(handle), queue=queue)
        numbers = Publisher(publisher, stream_topic, Int64Value)
        began = time.perf_counter()
        for _ in range(count):
            await numbers.publish(Int64Value(value=time.perf_counter_ns()))
        await receipts.done.wait()
    finally:
        await subscriber.close()
        await publisher.close()
        await _delete(address, f"micro:{stream_topic}")
    return receipts.last - began, receipts.latencies


def _plain_fields() -> dict[str, bytes | str]:
    return {"v": time.perf_counter_ns().to_bytes(8, "little")}


def _plain_value(fields: dict[bytes, bytes]) -> int | None:
    return int.from_bytes(fields[b"v"], "little")


def _typed_fields() -> dict[str, bytes | str]:
    body = Int64Value(value=time.perf_counter_ns()).SerializeToString()
    return {"id": secrets.token_hex(16), "body": body, "headers": HEADERS}


@functools.lru_cache(maxsize=64)  # the broker, too, decodes each distinct set once
def _headers(raw: bytes) -> dict[str, str]:
    decoded: dict[str, str] = json.loads(raw)
    return decoded


def _typed_value(fields: dict[bytes, bytes]) -> int | None:
    if _headers(fields[b"headers"]).get("micro-type") != Int64Value.DESCRIPTOR.full_name:
        return None
    return Int64Value.FromString(fields[b"body"]).value


async def _raw(
    address: str, count: int, group: bool, typed: bool = False
) -> tuple[float, list[float]]:
    make, read = (_typed_fields, _typed_value) if typed else (_plain_fields, _plain_value)
    stream = f"bench-raw-{uuid.uuid4().hex}"
    receipts = Receipts(count)
    publisher = Redis.from_url(address)
    reader = Redis.from_url(address, single_connection_client=True, socket_timeout=None)
    if group:
        await publisher.xgroup_create(stream, GROUP, id="$", mkstream=True)
        last: bytes | str = ">"
    else:
        last = "0-0"  # the stream is new: everything in it is new

    async def consume() -> None:
        nonlocal last
        while len(receipts.latencies) < count:
            reply: Any  # RESP2: [[stream, [(id, fields), ...]]] or None
            if group:
                reply = await reader.xreadgroup(
                    GROUP, "raw", {stream: ">"}, count=BATCH, block=1000
                )
            else:
                reply = await reader.xread({stream: last}, count=BATCH, block=1000)
            entries = [entry for _, batch in reply or () for entry in batch]
            for _, fields in entries:
                value = read(fields)
                if value is not None:
                    receipts.handled(value)
            if entries and group:
                await reader.xack(stream, GROUP, *(entry for entry, _ in entries))
            elif entries:
                last = entries[-1][0]

    consumer = asyncio.get_running_loop().create_task(consume())
    try:
        began = time.perf_counter()
        for _ in range(count):
            await publisher.xadd(stream, make(), maxlen=MAXLEN)  # type: ignore[arg-type]
        await consumer
    finally:
        consumer.cancel()
        await reader.aclose()
        await publisher.delete(stream)
        await publisher.aclose()
    return receipts.last - began, receipts.latencies


async def _delete(address: str, stream: str) -> None:
    client = Redis.from_url(address)
    await client.delete(stream)
    await client.aclose()


async def run_micro(address: str, count: int) -> tuple[float, list[float]]:
    return await _micro(address, count, queue=GROUP)


async def run_raw(address: str, count: int) -> tuple[float, list[float]]:
    return await _raw(address, count, group=True)


async def run_raw_typed(address: str, count: int) -> tuple[float, list[float]]:
    return await _raw(address, count, group=True, typed=True)


async def run_micro_broadcast(address: str, count: int) -> tuple[float, list[float]]:
    return await _micro(address, count, queue=None)


async def run_raw_broadcast(address: str, count: int) -> tuple[float, list[float]]:
    return await _raw(address, count, group=False)


VARIANTS = [
    (NAME, run_micro, run_raw),
    (f"{NAME}-typed", run_micro, run_raw_typed),
    (f"{NAME}-broadcast", run_micro_broadcast, run_raw_broadcast),
]


async def _by_hand(address: str, count: int) -> None:
    for name, micro, raw in VARIANTS:
        for side, run in (("micro", micro), ("raw", raw)):
            elapsed, latencies = await run(address, count)
            p50 = sorted(latencies)[len(latencies) // 2] * 1e3
            print(f"{name:16} {side:5} {count / elapsed:8.0f} msg/s  p50 {p50:.2f} ms")


if __name__ == "__main__":
    with server() as url:
        asyncio.run(_by_hand(url, int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
