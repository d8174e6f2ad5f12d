"""NatsBroker against a real nats-server (JetStream on): the broker contract in core
and JetStream mode, and what is particular to each."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import contract
import nats
import pytest
from contract import *  # noqa: F403  (the contract every backend passes, run here)
from google.protobuf.wrappers_pb2 import Int64Value
from nats_support import NatsServer, free_port, running

from micro.broker import BrokerError, Envelope, EventContext, Publisher, RawHandler, typed
from micro.broker.nats import NatsBroker, safe_name

pytestmark = pytest.mark.backend

MODES = ["nats", "jetstream"]


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with running(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


class Opener:
    """Connected brokers of one mode, all closed when the test ends."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode
        self.opened: list[NatsBroker] = []

    async def __call__(self, **options: object) -> NatsBroker:
        settings: dict[str, object] = {"max_attempts": 3, "backoff": 0.01}
        settings.update(options)
        broker = NatsBroker(self.url, jetstream=self.mode == "jetstream", **settings)  # type: ignore[arg-type]
        await broker.connect()
        self.opened.append(broker)
        return broker

    async def close(self) -> None:
        for broker in self.opened:
            await broker.close()


@pytest.fixture(params=MODES)
async def open_broker(
    request: pytest.FixtureRequest, nats_server: NatsServer
) -> AsyncIterator[Opener]:
    opener = Opener(nats_server.url, request.param)
    yield opener
    await opener.close()


@pytest.fixture
async def open_jetstream(nats_server: NatsServer) -> AsyncIterator[Opener]:
    opener = Opener(nats_server.url, "jetstream")
    yield opener
    await opener.close()


# -- the contract, in both modes -------------------------------------------------


async def test_unsubscribe_drains(open_broker: Opener, nats_server: NatsServer, topic: str) -> None:
    kept = (
        jetstream_outstanding(nats_server.url, topic) if open_broker.mode == "jetstream" else None
    )
    await contract.check_unsubscribe_drains(open_broker, topic, kept)


async def test_at_least_once_across_kill_9(
    open_jetstream: Opener,
    nats_server: NatsServer,
    topic: str,
    record_property: Callable[[str, object], None],
) -> None:
    """JetStream only: core NATS is at most once (next test)."""
    # window: the consumer's concurrency (64); it asks the server for no more
    # messages than it has free handlers, and its acks reach the server ahead of
    # the request that refills the freed room.
    summary = await contract.check_at_least_once(
        open_jetstream,
        "jetstream",
        nats_server.url,
        topic,
        jetstream_outstanding(nats_server.url, topic),
        window=64,
    )
    record_property(contract.SUMMARY, f"jetstream: {summary}")


def jetstream_outstanding(url: str, topic: str) -> contract.Outstanding:
    """Messages the durable consumer ``workers`` has not delivered or not had acked."""

    async def outstanding() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jsm().consumer_info(f"micro_{safe_name(topic)}", "workers")
        finally:
            await nc.close()
        return int(info.num_pending) + int(info.num_ack_pending)

    return outstanding


# -- what each mode keeps --------------------------------------------------------


def counter() -> tuple[asyncio.Queue[int], RawHandler]:
    got, handle = contract.counter()
    return got, typed(handle)


@pytest.mark.parametrize(("mode", "kept"), [("nats", False), ("jetstream", True)])
async def test_a_queue_gets_what_was_published_while_it_was_down(
    nats_server: NatsServer, topic: str, mode: str, kept: bool
) -> None:
    """Core NATS stores nothing: a message published while the queue's only subscriber
    is gone never arrives. JetStream keeps it for the durable consumer."""
    opener = Opener(nats_server.url, mode)
    try:
        subscriber, publisher = await opener(), await opener()
        numbers = Publisher(publisher, topic, Int64Value)
        got, handle = counter()
        sub = await subscriber.subscribe(topic, handle, queue="workers")
        await numbers.publish(Int64Value(value=1))
        assert await contract.take(got, 1) == [1]
        await sub.unsubscribe()
        await numbers.publish(Int64Value(value=2))  # nobody listens
        await publisher.flush()  # the server has routed it (to nobody) before we go on
        await subscriber.subscribe(topic, handle, queue="workers")
        await numbers.publish(Int64Value(value=3))
        # One publisher's messages arrive in order: had 2 survived, it comes before 3.
        assert await contract.take(got, 2 if kept else 1) == ([2, 3] if kept else [3])
    finally:
        await opener.close()


@pytest.mark.parametrize("mode", MODES)
async def test_broadcast_starts_at_subscribe(
    nats_server: NatsServer, topic: str, mode: str
) -> None:
    """A subscriber without a queue gets what is published from subscribe on, in both
    modes (JetStream: an ephemeral consumer from the stream's end)."""
    opener = Opener(nats_server.url, mode)
    try:
        early, publisher = await opener(), await opener()
        numbers = Publisher(publisher, topic, Int64Value)
        got_early, handle_early = counter()
        await early.subscribe(topic, handle_early)  # makes the stream in JetStream mode
        await numbers.publish(Int64Value(value=1))
        assert await contract.take(got_early, 1) == [1]
        got_late, handle_late = counter()
        await (await opener()).subscribe(topic, handle_late)
        await numbers.publish(Int64Value(value=2))
        assert await contract.take(got_late, 1) == [2]
        assert await contract.take(got_early, 1) == [2]
    finally:
        await opener.close()


async def test_jetstream_message_survives_a_server_restart(tmp_path: Path, topic: str) -> None:
    """Acked by the stream means stored: a message published for a queue that is down,
    then the server killed and started again (same store), still reaches the queue."""
    with running(tmp_path) as server:
        opener = Opener(server.url, "jetstream")
        try:
            broker = await opener()
            got, handle = counter()
            sub = await broker.subscribe(topic, handle, queue="workers")
            await sub.unsubscribe()  # the durable consumer stays
            await Publisher(broker, topic, Int64Value).publish(Int64Value(value=42))
            await broker.close()
            server.stop()
            server.start()
            await (await opener()).subscribe(topic, handle, queue="workers")
            assert await contract.take(got, 1) == [42]
        finally:
            await opener.close()


async def test_jetstream_subscriber_resumes_after_a_server_restart(
    tmp_path: Path, topic: str
) -> None:
    """A subscriber whose server went away and came back reconnects and pulls again."""
    with running(tmp_path) as server:
        opener = Opener(server.url, "jetstream")
        try:
            got, handle = counter()
            await (await opener(reconnect_wait=0.05)).subscribe(topic, handle, queue="workers")
            server.stop()
            server.start()
            await Publisher(await opener(), topic, Int64Value).publish(Int64Value(value=7))
            assert await contract.take(got, 1) == [7]
        finally:
            await opener.close()


async def test_redelivery_by_the_server_continues_the_attempt_count(
    open_jetstream: Opener, nats_server: NatsServer, topic: str
) -> None:
    """A message a dead consumer took (never acked) comes back with num_delivered=2:
    the handler sees attempt 2, and only max_attempts - 1 attempts are left."""
    broker = await open_jetstream(ack_wait=0.5)
    attempts: list[int] = []
    dead: asyncio.Queue[Envelope] = asyncio.Queue()

    async def broken(event: Int64Value, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("always")

    async def dead_letters(envelope: Envelope) -> None:
        await dead.put(envelope)

    await broker.subscribe(f"{topic}.dlq", dead_letters, queue="dlq")
    sub = await broker.subscribe(topic, typed(broken), queue="workers")
    await sub.unsubscribe()  # leaves the durable consumer "workers" with ack_wait 0.5 s
    await Publisher(broker, topic, Int64Value).publish(Int64Value(value=1))
    nc = await nats.connect(nats_server.url)
    try:  # a consumer that takes the message and dies without acking
        raw = await nc.jetstream().pull_subscribe_bind("workers", stream=f"micro_{topic}")
        taken = await raw.fetch(1, timeout=5)
        assert taken[0].metadata.num_delivered == 1
    finally:
        await nc.close()
    await broker.subscribe(topic, typed(broken), queue="workers")
    envelope = await asyncio.wait_for(dead.get(), contract.WAIT)
    assert attempts == [2, 3]
    assert "RuntimeError: always" in envelope.headers["micro-dead-reason"]


@pytest.mark.parametrize("mode", MODES)
async def test_handlers_in_flight_are_bounded(
    nats_server: NatsServer, topic: str, mode: str
) -> None:
    """20 messages, concurrency 4: four handlers run, the rest wait (in JetStream the
    server holds them: it was asked for no more than four)."""
    opener = Opener(nats_server.url, mode)
    try:
        subscriber, publisher = await opener(concurrency=4), await opener()
        running = 0
        peak = 0
        four = asyncio.Event()
        release = asyncio.Event()
        done: asyncio.Queue[int] = asyncio.Queue()

        async def slow(event: Int64Value, ctx: EventContext) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == 4:
                four.set()
            await release.wait()
            running -= 1
            await done.put(event.value)

        await subscriber.subscribe(topic, typed(slow), queue="workers")
        numbers = Publisher(publisher, topic, Int64Value)
        for i in range(20):
            await numbers.publish(Int64Value(value=i))
        await asyncio.wait_for(four.wait(), contract.WAIT)
        if mode == "jetstream":
            nc = await nats.connect(nats_server.url)
            try:
                info = await nc.jsm().consumer_info(f"micro_{topic}", "workers")
            finally:
                await nc.close()
            assert (info.num_ack_pending, info.num_pending) == (4, 16)
        release.set()
        assert sorted(await contract.take(done, 20)) == list(range(20))
        assert peak == 4
    finally:
        await opener.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_foreign_message_without_envelope_headers_is_handled(
    nats_server: NatsServer, topic: str, mode: str
) -> None:
    opener = Opener(nats_server.url, mode)
    got: asyncio.Queue[tuple[int, EventContext]] = asyncio.Queue()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        await got.put((event.value, ctx))

    nc = await nats.connect(nats_server.url)
    try:
        broker = await opener()
        await broker.subscribe(topic, typed(handle), queue="workers")
        body = Int64Value(value=9).SerializeToString()
        sent = time.time()
        if mode == "jetstream":
            await nc.jetstream().publish(topic, body, headers={"x-from": "go"})
        else:
            await nc.publish(topic, body, headers={"x-from": "go"})
        value, ctx = await asyncio.wait_for(got.get(), contract.WAIT)
        received = time.time()
    finally:
        await nc.close()
        await opener.close()
    assert value == 9
    assert ctx.envelope.content_type == "application/protobuf"
    assert ctx.headers == {"x-from": "go"}
    if mode == "jetstream":  # stream and sequence: the same on every redelivery
        assert ctx.id == f"micro_{topic}-1"
    else:
        assert len(ctx.id) == 32
    # the stream's time (to the microsecond) in JetStream, the time of arrival in core
    assert sent - 1e-6 <= ctx.timestamp <= received


@pytest.mark.parametrize("mode", MODES)
async def test_timestamps_come_from_the_header_or_the_stream(
    nats_server: NatsServer, topic: str, mode: str
) -> None:
    """Core mode carries every timestamp in a header. JetStream leaves it out for a
    fresh message (the stream's time stands for it) and keeps an old one's, a
    republished dead letter's say."""
    opener = Opener(nats_server.url, mode)
    try:
        subscriber, publisher = await opener(), await opener()
        got: asyncio.Queue[Envelope] = asyncio.Queue()
        await subscriber.subscribe(topic, got.put, queue="workers")
        fresh = Envelope(topic, b"fresh", "application/protobuf")
        old = Envelope(topic, b"old", "application/protobuf", timestamp=fresh.timestamp - 3600)
        await publisher.publish(fresh)
        stored = time.time()  # a JetStream publish returns once the stream stored it
        await publisher.publish(old)
        first, second = [await asyncio.wait_for(got.get(), contract.WAIT) for _ in range(2)]
    finally:
        await opener.close()
    assert (first.body, second.body) == (b"fresh", b"old")
    if mode == "jetstream":  # stamped as stored (to the microsecond), or its own if later
        assert fresh.timestamp - 1e-6 <= first.timestamp <= stored
    else:
        assert first.timestamp == fresh.timestamp
    assert second.timestamp == old.timestamp


@pytest.mark.parametrize("mode", MODES)
async def test_unreachable_address_fails_fast_naming_it(mode: str, unused_port: int) -> None:
    """Refused connections fail at once, and the broker tries each server once more
    after ``reconnect_wait`` (0.2 s). With a connect timeout past WAIT, failing within
    WAIT shows it gave up on the refusals: it neither waited out a timeout nor kept
    retrying (nats-py's default: 60 times, 2 s apart)."""
    first, second = f"nats://127.0.0.1:{unused_port}", f"nats://127.0.0.1:{free_port()}"
    broker = NatsBroker(
        f"{first}, {second}", jetstream=mode == "jetstream", connect_timeout=10 * contract.WAIT
    )
    with pytest.raises(BrokerError, match=f"at {first},{second} is unreachable"):
        await asyncio.wait_for(broker.connect(), contract.WAIT)


async def test_passwords_never_print(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with running(tmp_path, login=("app", "s3cret-pw")) as server:
        caplog.set_level(logging.DEBUG)
        good = NatsBroker(f"nats://app:s3cret-pw@127.0.0.1:{server.port}")
        wrong = NatsBroker(f"nats://app:wr0ng-pw@127.0.0.1:{server.port}")
        try:
            await good.connect()
            with pytest.raises(BrokerError) as refused:
                await wrong.connect()
        finally:
            await good.close()
        at = f"nats://app:***@127.0.0.1:{server.port}"
        assert at in repr(good)
        assert f"NATS at {at} is unreachable" in str(refused.value)
        assert f"NATS broker at {at}: Error(\"nats: 'Authorization Violation'\")" in caplog.text
        shown = [repr(good), repr(wrong), str(refused.value), caplog.text]
        assert not [text for text in shown if "s3cret" in text or "wr0ng" in text], shown


async def test_bad_topics_queues_and_headers_are_refused_by_name(open_broker: Opener) -> None:
    broker = await open_broker()
    with pytest.raises(BrokerError, match=r"topic 'a b' is not a NATS subject"):
        await Publisher(broker, "a b", Int64Value).publish(Int64Value())
    with pytest.raises(BrokerError, match=r"topic 'orders\.\*' is not a NATS subject"):
        await broker.subscribe("orders.*", typed(contract.counter()[1]))
    with pytest.raises(BrokerError, match=r"queue 'two words' of orders"):
        await broker.subscribe("orders", typed(contract.counter()[1]), queue="two words")
    with pytest.raises(BrokerError, match=r"header 'bad key' on orders: a NATS header name"):
        await Publisher(broker, "orders", Int64Value).publish(Int64Value(), {"bad key": "v"})
    with pytest.raises(BrokerError, match=r"header 'k' on orders: a NATS header value is one"):
        await Publisher(broker, "orders", Int64Value).publish(Int64Value(), {"k": "two\nlines"})


async def test_publish_before_connect_says_so() -> None:
    with pytest.raises(BrokerError, match=r"NatsBroker\('nats://127.0.0.1:4222'\) is not conn"):
        await NatsBroker().publish(Envelope("t", b"", "application/protobuf"))


def test_stream_names_never_collide() -> None:
    topics = ["a.b", "a_b", "a_2Eb", "a-b", "ä.b"]
    names = [safe_name(t) for t in topics]
    assert names == ["a_2Eb", "a_5Fb", "a_5F2Eb", "a-b", "_C3_A4_2Eb"]
    assert len(set(names)) == len(topics)


def test_without_nats_py_the_import_says_what_to_install() -> None:
    code = "import sys; sys.modules['nats'] = None; import micro.broker.nats"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: micro.broker.nats needs nats-py: install `micro-grpc[nats]`"
    )
