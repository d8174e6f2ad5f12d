"""RedisBroker against a redis-server of the test's own: the broker contract, then
what is Redis-specific (consumer groups, claims, foreign entries, connections)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import contract
import pytest
import redis_fixture
from contract import *  # noqa: F403  (the contract every backend passes, run here)
from google.protobuf.wrappers_pb2 import Int64Value
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from micro.broker import (
    BrokerError,
    Envelope,
    EventContext,
    Publisher,
    RawHandler,
    dead_letter_topic,
    typed,
)
from micro.broker.redis import UNBLOCK_TRIES, RedisBroker

pytestmark = [
    pytest.mark.backend,
    pytest.mark.skipif(
        not redis_fixture.available(), reason=f"{redis_fixture.BINARY} is not installed"
    ),
]

WAIT = 10.0
OpenRedis = Callable[..., Awaitable[RedisBroker]]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with redis_fixture.redis_server() as address:
        yield address


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raw(url: str) -> AsyncIterator[Redis]:
    """A plain redis-py client: a foreign publisher, and a look at the server's state."""
    client = Redis.from_url(url)
    yield client
    await client.aclose()


@pytest.fixture
async def open_broker(url: str) -> AsyncIterator[OpenRedis]:
    """New connected brokers (3 attempts, short backoff), closed after the test."""
    brokers: list[RedisBroker] = []

    async def open_one(**options: float) -> RedisBroker:
        broker = RedisBroker(url, max_attempts=3, backoff=0.01, **options)  # type: ignore[arg-type]
        await broker.connect()
        brokers.append(broker)
        return broker

    yield open_one
    for broker in brokers:
        await broker.close()


# The contract every backend shows.


async def test_unsubscribe_drains(open_broker: OpenRedis, raw: Redis, topic: str) -> None:
    await contract.check_unsubscribe_drains(open_broker, topic, group_outstanding(raw, topic))


async def test_at_least_once(
    open_broker: OpenRedis,
    raw: Redis,
    url: str,
    topic: str,
    record_property: Callable[[str, object], None],
) -> None:
    # window: twice the consumer's concurrency (64). It reads no more entries than it
    # has free handlers, but acks entries that finished during a read on another
    # connection, so until that XACK lands the freed room may be read again.
    summary = await contract.check_at_least_once(
        open_broker, "redis", url, topic, group_outstanding(raw, topic), window=2 * 64
    )
    record_property(contract.SUMMARY, f"redis: {summary}")


def group_outstanding(raw: Redis, topic: str) -> contract.Outstanding:
    """Entries group ``workers`` has not read, or read and not acked."""

    async def outstanding() -> int:
        groups = await raw.xinfo_groups(f"micro:{topic}")
        group = next(g for g in groups if g["name"] == b"workers")
        assert group["lag"] is not None  # Redis 7 counts the entries not yet read
        return int(group["pending"]) + int(group["lag"])

    return outstanding


# Redis specifics.


def text(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def collector() -> tuple[asyncio.Queue[tuple[int, EventContext]], RawHandler]:
    got: asyncio.Queue[tuple[int, EventContext]] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        await got.put((event.value, ctx))

    return got, typed(handle)


async def test_unreachable_address_fails_fast_naming_it(unused_port: int) -> None:
    """A refused connection fails at once; the broker retries twice, 0.1 s and 0.2 s
    later. With a connect timeout past WAIT, failing within WAIT shows it gave up on
    the refusals rather than waiting out a timeout or retrying on."""
    broker = RedisBroker(f"redis://:secret@127.0.0.1:{unused_port}/0", connect_timeout=10 * WAIT)
    with pytest.raises(BrokerError, match=f"127.0.0.1:{unused_port}/0: unreachable") as failure:
        await asyncio.wait_for(broker.connect(), WAIT)
    assert "secret" not in str(failure.value)


def test_bad_address_is_named() -> None:
    with pytest.raises(ValueError, match=r"'http://127\.0\.0\.1:6379'"):
        RedisBroker("http://127.0.0.1:6379")


def test_missing_extra_is_one_line() -> None:
    code = "import sys; sys.modules['redis'] = None; import micro.broker.redis"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "ImportError: micro.broker.redis needs redis-py: install `micro-grpc[redis]`"
    )


async def test_foreign_entries_are_handled_or_dead_lettered(
    open_broker: OpenRedis,
    raw: Redis,
    topic: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Entries another client wrote: a bare body is a message; the rest is dead-lettered
    with a log line naming the entry, and consuming goes on."""
    broker = await open_broker()
    got, handle = collector()
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    async def dead_letters(envelope: Envelope) -> None:
        await dead.put(envelope)

    await broker.subscribe(dead_letter_topic(topic), dead_letters, queue="dlq")
    await broker.subscribe(topic, handle, queue="numbers")
    stream = f"micro:{topic}"
    bad: dict[str, dict[FieldT, EncodableT]] = {
        "no body": {"junk": b"\xff"},
        "bad headers": {"body": b"", "headers": b"[not json"},
        "bad id": {"body": b"", "id": b"\xff\xfe"},
        "bad timestamp": {"body": b"", "timestamp": b"noon"},
    }
    with caplog.at_level(logging.WARNING, logger="micro.broker"):
        entries = {text(await raw.xadd(stream, fields)): what for what, fields in bad.items()}
        letters = [await asyncio.wait_for(dead.get(), WAIT) for _ in bad]
    reasons = {e.headers["micro-dead-reason"] for e in letters}
    for entry in entries:
        assert any(entry in reason for reason in reasons), f"{entries[entry]} not dead-lettered"
        assert any(entry in r.getMessage() and topic in r.getMessage() for r in caplog.records)
    sent = time.time()
    bare = text(await raw.xadd(stream, {"body": Int64Value(value=42).SerializeToString()}))
    value, ctx = await asyncio.wait_for(got.get(), WAIT)
    assert (value, ctx.id, ctx.attempt) == (42, bare, 1)
    assert sent - 0.001 <= ctx.timestamp <= time.time()  # the entry id's milliseconds
    await Publisher(broker, topic, Int64Value).publish(Int64Value(value=5))
    assert (await asyncio.wait_for(got.get(), WAIT))[0] == 5


async def test_group_keeps_messages_while_its_consumers_are_down(
    open_broker: OpenRedis, raw: Redis, topic: str
) -> None:
    """A new group starts from now; once created it keeps what is published while no
    consumer runs. A consumer leaving cleanly with nothing pending is removed."""
    broker = await open_broker()
    numbers = Publisher(broker, topic, Int64Value)
    await numbers.publish(Int64Value(value=-1))  # before the group existed: not for it
    got, handle = collector()
    sub = await broker.subscribe(topic, handle, queue="keep")
    await numbers.publish(Int64Value(value=0))
    assert (await asyncio.wait_for(got.get(), WAIT))[0] == 0
    await sub.unsubscribe()
    assert await raw.xinfo_consumers(f"micro:{topic}", "keep") == []
    for i in range(1, 6):
        await numbers.publish(Int64Value(value=i))  # nobody subscribed
    await broker.subscribe(topic, handle, queue="keep")
    values = [(await asyncio.wait_for(got.get(), WAIT))[0] for _ in range(5)]
    assert values == [1, 2, 3, 4, 5]
    assert got.empty()


async def test_entries_of_a_dead_consumer_are_claimed_counting_deliveries(
    open_broker: OpenRedis, raw: Redis, topic: str
) -> None:
    """Entries a consumer read and never acked go to a live consumer after
    ``claim_idle``; the attempt number continues the server's delivery count, and an
    entry delivered ``max_attempts`` times already is dead-lettered unhandled."""
    stream = f"micro:{topic}"
    broker = await open_broker(claim_idle=0.2)
    await raw.xgroup_create(stream, "workers", id="$", mkstream=True)
    numbers = Publisher(broker, topic, Int64Value)
    await numbers.publish(Int64Value(value=1))
    await numbers.publish(Int64Value(value=2))
    # [[stream, [(id, fields), ...]]]; then this consumer "dies"
    taken: Any = await raw.xreadgroup("workers", "dead", {stream: ">"}, count=2)
    second = taken[0][1][1][0]
    await raw.xclaim(stream, "workers", "dead", 0, [second], retrycount=3, justid=True)
    seen: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        await seen.put((event.value, ctx.attempt))

    async def dead_letters(envelope: Envelope) -> None:
        await dead.put(envelope)

    await broker.subscribe(dead_letter_topic(topic), dead_letters, queue="dlq")
    await broker.subscribe(topic, typed(handle), queue="workers")
    assert await asyncio.wait_for(seen.get(), WAIT) == (1, 2)
    letter = await asyncio.wait_for(dead.get(), WAIT)
    assert Int64Value.FromString(letter.body).value == 2
    assert "delivered 4 times, max_attempts=3" in letter.headers["micro-dead-reason"]
    assert seen.empty()


async def test_slow_handler_keeps_its_message(open_broker: OpenRedis, topic: str) -> None:
    """A live consumer refreshes what it is handling: no other consumer claims it,
    however much longer than ``claim_idle`` the handler takes."""
    handled: list[tuple[str, int]] = []
    done = asyncio.Event()

    def slow(name: str) -> RawHandler:
        async def handle(event: Int64Value, ctx: EventContext) -> None:
            handled.append((name, ctx.attempt))
            # The slow work itself: three times claim_idle (0.6 s), in which the other
            # consumer scans for idle entries about six times (every claim_idle / 2)
            # while this one refreshes its entry every claim_idle / 3.
            await asyncio.sleep(1.8)
            done.set()

        return typed(handle)

    a, b = await open_broker(claim_idle=0.6), await open_broker(claim_idle=0.6)
    await a.subscribe(topic, slow("a"), queue="slow")
    await b.subscribe(topic, slow("b"), queue="slow")
    await Publisher(a, topic, Int64Value).publish(Int64Value(value=1))
    await asyncio.wait_for(done.wait(), WAIT)
    await a.close()  # waits for any handler still running
    await b.close()
    assert len(handled) == 1
    assert handled[0][1] == 1


async def test_in_flight_handlers_are_bounded(
    open_broker: OpenRedis, raw: Redis, topic: str
) -> None:
    """With ``concurrency=4`` only 4 handlers run and only 4 entries are taken from
    the stream; the rest wait in Redis for this or another consumer."""
    broker = await open_broker(concurrency=4)
    release = asyncio.Event()
    running: list[int] = []
    four = asyncio.Event()
    done: asyncio.Queue[int] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        running.append(event.value)
        if len(running) == 4:
            four.set()
        await release.wait()
        await done.put(event.value)

    sub = await broker.subscribe(topic, typed(handle), queue="bounded")
    numbers = Publisher(broker, topic, Int64Value)
    for i in range(20):
        await numbers.publish(Int64Value(value=i))
    await asyncio.wait_for(four.wait(), WAIT)
    summary = await raw.xpending(f"micro:{topic}", "bounded")
    assert (len(running), summary["pending"]) == (4, 4)
    release.set()
    assert sorted(await contract.take(done, 20)) == list(range(20))
    await sub.unsubscribe()
    assert sorted(running) == list(range(20))
    assert (await raw.xpending(f"micro:{topic}", "bounded"))["pending"] == 0


async def test_unsubscribe_waits_for_handlers_then_acks(
    open_broker: OpenRedis, raw: Redis, topic: str
) -> None:
    """Unsubscribing with a handler running: the handler finishes, its entry is acked
    and the consumer leaves the group. (That unsubscribe returns only after the
    handler: the contract's ``check_unsubscribe_drains``.)"""
    broker = await open_broker()
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        started.set()
        await release.wait()
        finished.set()

    sub = await broker.subscribe(topic, typed(handle), queue="graceful")
    await Publisher(broker, topic, Int64Value).publish(Int64Value(value=1))
    await asyncio.wait_for(started.wait(), WAIT)
    unsubscribing = asyncio.ensure_future(sub.unsubscribe())
    await asyncio.sleep(0)  # a yield: it begins while the handler is blocked
    assert not finished.is_set()
    release.set()
    await asyncio.wait_for(unsubscribing, WAIT)
    assert finished.is_set()
    assert (await raw.xpending(f"micro:{topic}", "graceful"))["pending"] == 0
    assert await raw.xinfo_consumers(f"micro:{topic}", "graceful") == []


async def test_close_interrupts_blocked_reads_and_frees_connections(
    open_broker: OpenRedis, raw: Redis, topic: str
) -> None:
    """Each subscription reads on a connection of its own (publishing goes on beside a
    blocked read); closing wakes the reads at once and closes their connections."""
    before = len(await raw.client_list())
    broker = await open_broker(claim_idle=4 * WAIT)  # a group read blocks claim_idle / 2
    got, handle = collector()
    await broker.subscribe(topic, handle)
    await broker.subscribe(topic, handle, queue="q")
    assert len(await raw.client_list()) == before + 3
    await Publisher(broker, topic, Int64Value).publish(Int64Value(value=1))
    assert sorted([(await asyncio.wait_for(got.get(), WAIT))[0] for _ in range(2)]) == [1, 1]
    started = time.monotonic()
    await broker.close()
    # Woken, the reads end at once. Unwoken, they would end when their block does
    # (5 s broadcast, 2 WAIT group), or be cancelled after UNBLOCK_TRIES unblocks
    # 50 ms apart (2 s): closing in less shows the reads were woken.
    assert time.monotonic() - started < UNBLOCK_TRIES * 0.05, "the reads were not woken"
    assert len(await raw.client_list()) == before


async def test_server_gone_publish_fails_naming_it_and_close_returns(topic: str) -> None:
    with redis_fixture.redis_server() as url:
        broker = RedisBroker(url)
        await broker.connect()
        await broker.subscribe(topic, collector()[1], queue="q")
    with pytest.raises(BrokerError, match=f"{url.split('/')[2]}.*micro:{topic}"):
        await asyncio.wait_for(
            Publisher(broker, topic, Int64Value).publish(Int64Value(value=1)), WAIT
        )
    await asyncio.wait_for(broker.close(), WAIT)  # its readers wait to retry: stopped at once


async def test_subscribers_come_back_after_an_empty_server_restart(
    topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Readers retry while the server is down; an empty server (no persistence) gets
    the consumer group created again, and both kinds of subscriber consume on."""
    server = redis_fixture.RedisServer()
    server.start()
    try:
        broker = RedisBroker(server.url, max_attempts=3, backoff=0.01)
        await broker.connect()
        (grouped, handle_grouped), (broadcast, handle_broadcast) = collector(), collector()
        await broker.subscribe(topic, handle_grouped, queue="q")
        await broker.subscribe(topic, handle_broadcast)
        numbers = Publisher(broker, topic, Int64Value)
        await numbers.publish(Int64Value(value=1))
        assert (await asyncio.wait_for(grouped.get(), WAIT))[0] == 1
        assert (await asyncio.wait_for(broadcast.get(), WAIT))[0] == 1
        server.stop()
        with caplog.at_level(logging.WARNING, logger="micro.broker"):
            with pytest.raises(BrokerError, match=f"127.0.0.1:{server.port}"):
                await numbers.publish(Int64Value(value=2))
            server.start()
            # what is published before the group exists again is not the group's: keep
            # publishing until the reader is back (it retries with a backoff up to 2 s)
            for attempt in range(40):
                await numbers.publish(Int64Value(value=100 + attempt))
                try:
                    value = (await asyncio.wait_for(grouped.get(), 0.25))[0]
                    break
                except asyncio.TimeoutError:
                    continue
            else:
                pytest.fail("the queue subscriber did not come back in 10 s")
        assert value >= 100
        assert (await asyncio.wait_for(broadcast.get(), WAIT))[0] >= 100
        assert any("reading micro:" + topic in r.getMessage() for r in caplog.records)
        assert any("group q of micro:" + topic in r.getMessage() for r in caplog.records)
        await broker.close()
    finally:
        server.stop()
