"""A broker on Redis Streams (Redis 6.2+): one stream per topic, ``<prefix><topic>``.

Each message is one stream entry whose fields carry the envelope: ``id``, ``body``,
``headers`` (a JSON object; left out when empty), ``content-type`` (left out for
protobuf binary) and ``timestamp`` (left out when within a second of the publish: the
entry id, the server's time in milliseconds, stands for it; an older message, a dead
letter say, keeps its own). Fewer fields is less to encode and parse per message. An
entry written by another client needs only ``body``; one without it, or with fields
that do not decode, is dead-lettered with a log line naming the entry.

With a queue, subscribers share a consumer group named after the queue and each is a
consumer of its own in it. A new group starts at ``$``: it gets the messages published
after it was first created. From then on the group lives in Redis, so messages
published while all its consumers are down wait for them. An entry is acknowledged
(XACK) after the handler returned or after its dead letter was published; meanwhile
the subscriber retries in-process. Entries left pending by a consumer that died are
claimed (XAUTOCLAIM) by a live consumer of the group once idle for ``claim_idle``
seconds; the server's delivery count becomes the attempt number, so a message that
keeps killing its consumers is dead-lettered too. A live consumer refreshes its own
pending entries, so a slow handler does not have its message claimed away.
That is at-least-once delivery: a consumer killed between handling and acking gets
its messages handled again elsewhere.

Without a queue a subscriber reads the stream from the moment it subscribed and acks
nothing: at-most-once, a subscriber that was down misses what was published meanwhile.

Ordering: a stream keeps publish order and each subscriber reads it in that order, but
up to ``concurrency`` handlers run at once (``concurrency=1`` handles in order).
Durability is the Redis server's: what its RDB/AOF persistence keeps survives a
restart of the server. Streams are trimmed to about ``maxlen`` entries (``MAXLEN ~``):
the oldest are dropped even if a group has not read or acked them yet, so a group that
falls more than ``maxlen`` behind loses messages (logged when a claim finds them gone);
``maxlen=None`` keeps every entry. Dead letters go to the ``<topic>.dlq`` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

try:
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.exceptions import RedisError, ResponseError
    from redis.typing import EncodableT, FieldT
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("micro.broker.redis needs redis-py: install `micro-grpc[redis]`") from None

from micro import codec
from micro.broker.base import (
    BrokerError,
    Envelope,
    NotConnected,
    RawHandler,
    Undeliverable,
    check_positive,
    needs_timestamp,
)
from micro.broker.redelivery import Redelivery, Running, start
from micro.urls import masked

log = logging.getLogger(__name__)

MIN_VERSION = (6, 2)  # XAUTOCLAIM
BROADCAST_BLOCK = 5.0  # seconds one XREAD may wait before the reader looks around again
UNBLOCK_TRIES = 40  # CLIENT UNBLOCKs sent (every 50 ms) before a reader is cancelled
RETRY_PAUSE = (0.1, 2.0)  # first and longest pause of a reader after a failed read
PUBLISHING = 32  # publishes in flight at once per broker; more wait their turn
ACK_LINGER = 0.005  # seconds acks wait for the reader (or more acks) to take them along

Fields = Mapping[bytes, bytes]


class _Malformed(ValueError):
    pass


def _envelope(topic: str, entry: str, fields: Fields, attempt: int) -> Envelope:
    """The envelope of a stream entry; ``_Malformed`` names what is wrong with it."""
    body = fields.get(b"body")
    if body is None:
        names = sorted(k.decode(errors="replace") for k in fields)
        raise _Malformed(f"stream entry {entry} has no body field (fields: {names})")
    try:
        raw_headers = fields.get(b"headers")
        headers = _decode_headers(raw_headers) if raw_headers is not None else {}
        raw_id = fields.get(b"id")
        raw_type = fields.get(b"content-type")
        raw_time = fields.get(b"timestamp")
        return Envelope(
            topic,
            body,
            codec.PROTOBUF if raw_type is None else raw_type.decode(),
            headers,
            entry if raw_id is None else raw_id.decode(),
            int(entry.partition("-")[0]) / 1000 if raw_time is None else float(raw_time),
            attempt,
        )
    except ValueError as e:  # bad JSON, bad UTF-8 and bad numbers are all ValueErrors
        raise _Malformed(f"stream entry {entry} has malformed fields: {e}") from None


# Most messages of a topic carry the same headers (the type name): decode and encode
# each distinct set once.
@functools.lru_cache(maxsize=1024)
def _decode_headers(raw: bytes) -> Mapping[str, str]:
    headers = json.loads(raw)
    if not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
        raise ValueError("headers are not a JSON object of strings")
    return MappingProxyType(headers)  # shared by every message that has them: read-only


@functools.lru_cache(maxsize=1024)
def _encode_headers(items: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(items), separators=(",", ":"))


def _entries(reply: Any) -> list[tuple[bytes, Fields]]:
    """The (id, fields) pairs of an XREAD/XREADGROUP reply: ``[[stream, entries]]``."""
    return [entry for _, batch in reply or () for entry in batch]


def _salvage(topic: str, entry: str, fields: Fields) -> Envelope:
    """What can be kept of a malformed entry, to dead-letter it."""
    try:
        message_id = fields[b"id"].decode()
    except (KeyError, UnicodeDecodeError):
        message_id = entry
    return Envelope(
        topic,
        fields.get(b"body", b""),
        fields.get(b"content-type", b"application/octet-stream").decode(errors="replace"),
        {},
        message_id,
    )


def _code(e: ResponseError) -> str:
    """The code of a Redis error reply (``BUSYGROUP``, ``NOGROUP``): its first word,
    which redis-py keeps at the head of the message for codes it has no class for."""
    return str(e).partition(" ")[0]


def _refuse(reason: str) -> RawHandler:
    async def refuse(envelope: Envelope) -> None:
        raise Undeliverable(reason)

    return refuse


class _Subscription:
    """One reader on its own connection (XREAD/XREADGROUP BLOCK holds it), handlers as
    tasks, at most ``concurrency`` at once; with a queue also an acker and a keep-alive
    of the entries being handled."""

    def __init__(
        self, broker: RedisBroker, topic: str, handler: RawHandler, queue: str | None
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.queue = queue
        self.group = queue or ""  # the consumer group (with a queue)
        self.handler = handler
        self.stream = broker.stream_prefix + topic
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._reader = broker._new_reader()
        self._client_id: int | None = None
        self._last_id: bytes | str = "0-0"  # broadcast: the last entry seen
        self._cursor: bytes | str = "0-0"  # group: where the pending-entry scan goes on
        self._next_claim = 0.0
        self._inflight: set[bytes] = set()  # entries being handled
        self._running = Running()  # their deliveries that had to wait
        self._room = asyncio.Event()
        self._room.set()
        self._stop = asyncio.Event()
        self._acks: list[bytes] = []
        self._ack_wanted = asyncio.Event()
        self._reading = False  # the group reader is in its XACK/XREADGROUP round trips
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def start(self) -> None:
        client = self.broker._client()
        try:
            if self.queue is None:
                self._last_id = await self._stream_end(client)
            else:
                await self._create_group(client)
        except RedisError as e:
            await self._reader.aclose()
            raise self.broker._error(f"subscribing to {self.stream}", e) from None
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._read_loop()))
        if self.queue is not None:
            self._tasks.append(loop.create_task(self._ack_loop()))
            self._tasks.append(loop.create_task(self._keep_alive()))

    async def unsubscribe(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._room.set()
        await self._interrupt_reader()
        await self._running.drain()
        self._ack_wanted.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.queue is not None:
            await self._leave_group()
        await self._reader.aclose()
        self.broker._subscriptions.discard(self)

    async def _stream_end(self, client: Redis) -> bytes | str:
        """The id after which messages are new: the stream's last entry (or the start
        of a stream that is empty or does not exist yet). The last id ever generated
        may be later (its entry deleted), but no entry lies between the two."""
        last: Any = await client.xrevrange(self.stream, count=1)  # [(id, fields)] or []
        return last[0][0] if last else "0-0"

    async def _create_group(self, client: Redis) -> None:
        try:
            await client.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except ResponseError as e:
            if _code(e) != "BUSYGROUP":  # the group exists: join it
                raise

    async def _interrupt_reader(self) -> None:
        """Wake the reader out of its BLOCK and let it finish: cancelling it instead
        could lose entries Redis already handed to it (they would wait for a claim)."""
        reader = self._tasks[0]
        client = self.broker._client()
        for _ in range(UNBLOCK_TRIES):
            if reader.done():
                return
            if self._client_id is not None:
                with contextlib.suppress(RedisError):  # then the reader fails too, and stops
                    await client.client_unblock(self._client_id)
            await asyncio.wait([reader], timeout=0.05)
        reader.cancel()

    async def _paused(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True if stopped."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def _read_loop(self) -> None:
        pause = RETRY_PAUSE[0]
        while not self._stop.is_set():
            await self._room.wait()
            free = self.broker.concurrency - len(self._inflight)
            if free <= 0:  # woken by unsubscribe while full
                self._room.clear()
                continue
            try:
                if self._client_id is None:
                    self._client_id = await self._reader.client_id()
                if self.queue is None:
                    entries = await self._read_broadcast(free)
                else:
                    entries = await self._read_group(free)
                pause = RETRY_PAUSE[0]
            except RedisError as e:
                self._client_id = None  # a new connection gets a new id
                lost = isinstance(e, ResponseError) and _code(e) == "NOGROUP"
                if lost and await self._recreate_group():
                    continue
                log.warning(
                    "redis broker at %s: reading %s failed, again in %.1f s: %s",
                    self.broker.address,
                    self.stream,
                    pause,
                    e,
                )
                if await self._paused(pause):
                    return
                pause = min(pause * 2, RETRY_PAUSE[1])
                continue
            for entry, fields, attempt in entries:  # quick handlers finish here: acked next read
                self._dispatch(entry, fields, attempt)

    async def _recreate_group(self) -> bool:
        """The server lost the group (restarted without persistence, say): create it
        again. False if that fails too."""
        log.warning("group %s of %s is gone: creating it again", self.group, self.stream)
        try:
            await self._create_group(self.broker._client())
        except RedisError:
            return False
        return True

    async def _read_broadcast(self, count: int) -> list[tuple[bytes, Fields, int]]:
        block = int(BROADCAST_BLOCK * 1000)
        reply = await self._reader.xread({self.stream: self._last_id}, count=count, block=block)
        entries = [(entry, fields, 1) for entry, fields in _entries(reply)]
        if entries:
            self._last_id = entries[-1][0]
        return entries

    async def _read_group(self, count: int) -> list[tuple[bytes, Fields, int]]:
        self._reading = True
        try:
            return await self._read_group_once(count)
        finally:
            self._reading = False

    async def _read_group_once(self, count: int) -> list[tuple[bytes, Fields, int]]:
        if self._acks:  # ack what finished before reading on: one XACK per read, as by hand
            done, self._acks = self._acks, []
            try:
                await self._reader.xack(self.stream, self.group, *done)
            except RedisError:
                self._acks[:0] = done
                raise
        now = time.monotonic()
        if now >= self._next_claim:
            claimed = await self._claim(count)
            if claimed:
                return claimed
        block = max(1, int((self._next_claim - now) * 1000))
        reply = await self._reader.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block
        )
        return [(entry, fields, 1) for entry, fields in _entries(reply)]

    async def _claim(self, count: int) -> list[tuple[bytes, Fields, int]]:
        """One step of the scan for entries other consumers left pending too long."""
        idle = int(self.broker.claim_idle * 1000)
        reply = await self._reader.xautoclaim(
            self.stream, self.group, self.consumer, idle, start_id=self._cursor, count=count
        )
        cursor, claimed = reply[0], reply[1]
        deleted = list(reply[2]) if len(reply) > 2 else []  # Redis 7 lists trimmed entries
        self._cursor = cursor
        if cursor in (b"0-0", "0-0"):  # scanned to the end: look again a while later
            self._next_claim = time.monotonic() + self.broker.claim_idle / 2
        deleted += [entry for entry, fields in claimed if not fields]  # Redis 6.2: no fields
        if deleted:
            log.warning(
                "%d pending messages of %s were trimmed (maxlen) before being handled: lost",
                len(deleted),
                self.stream,
            )
            await self._reader.xack(self.stream, self.group, *deleted)
        entries = [(e, f) for e, f in claimed if f and e not in self._inflight]
        if not entries:
            return []
        pending = await self._reader.xpending_range(
            self.stream,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) + len(self._inflight),
            consumername=self.consumer,
        )
        delivered = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        return [(entry, fields, delivered.get(entry, 2)) for entry, fields in entries]

    def _dispatch(self, entry: bytes, fields: Fields, attempt: int) -> None:
        self._inflight.add(entry)  # ``_handle`` removes it when done
        self._running.add(start(self._handle(entry, fields, attempt)))  # most finish at once
        if len(self._inflight) >= self.broker.concurrency:
            self._room.clear()

    async def _handle(self, entry: bytes, fields: Fields, attempt: int) -> None:
        try:
            await self._deliver(entry, fields, attempt)
        finally:
            self._inflight.discard(entry)
            self._room.set()

    async def _deliver(self, entry: bytes, fields: Fields, attempt: int) -> None:
        name = entry.decode()
        handler = self.handler
        try:
            envelope = _envelope(self.topic, name, fields, attempt)
        except _Malformed as e:
            envelope = _salvage(self.topic, name, fields)
            handler = _refuse(f"{e} in {self.stream}")
        try:
            await self.broker.redelivery.run(handler, envelope, self.broker.publish)
        except Exception as e:  # the dead letter could not be published
            log.error(
                "message %s of %s stays pending, to be claimed again: %s",
                envelope.id,
                self.topic,
                e,
            )
            return
        if self.queue is not None:
            self._acks.append(entry)
            if self._reading:  # else the reader takes it along before its next read
                self._ack_wanted.set()

    async def _ack_loop(self) -> None:
        """XACK what finished while the reader waits in its BLOCK (it acks the rest
        itself), many entries per call."""
        while True:
            await self._ack_wanted.wait()
            if not self._stop.is_set():
                await asyncio.sleep(ACK_LINGER)
            self._ack_wanted.clear()
            entries, self._acks = self._acks, []
            if entries:
                try:
                    await self.broker._client().xack(self.stream, self.group, *entries)
                except RedisError as e:
                    log.warning(
                        "could not ack %d messages of %s (they will be handled again): %s",
                        len(entries),
                        self.stream,
                        e,
                    )
            if self._stop.is_set() and not self._inflight and not self._acks:
                return

    async def _keep_alive(self) -> None:
        """Reset the idle time of the entries being handled, so other consumers do not
        claim them from a live but slow handler (JUSTID: no delivery is counted)."""
        while not await self._paused(self.broker.claim_idle / 3):
            entries: list[Any] = list(self._inflight)
            if entries:
                try:
                    await self.broker._client().xclaim(
                        self.stream, self.group, self.consumer, 0, entries, justid=True
                    )
                except RedisError as e:
                    log.warning("could not refresh pending messages of %s: %s", self.stream, e)

    async def _leave_group(self) -> None:
        """Remove this consumer from the group unless entries are still pending on it
        (then another consumer claims them later)."""
        client = self.broker._client()
        try:
            pending = await client.xpending_range(
                self.stream, self.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not pending:
                await client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except RedisError as e:
            log.warning("could not leave group %s of %s: %s", self.group, self.stream, e)


class RedisBroker:
    """``Broker`` on Redis Streams::

        broker = RedisBroker("redis://127.0.0.1:6379/0")
        await broker.connect()
        await broker.subscribe("orders", typed(bill), queue="billing")
        await Publisher(broker, "orders", Order).publish(order)

    ``maxlen`` bounds each stream (approximately; ``None``: unbounded), ``concurrency``
    the handlers running at once per subscription, ``claim_idle`` how long (seconds) an
    entry pending on a dead consumer waits before another consumer takes it over.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream_prefix: str = "micro:",
        maxlen: int | None = 100_000,
        max_attempts: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        concurrency: int = 64,
        claim_idle: float = 3.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.address = masked(url)
        try:
            parse_url(url)
        except ValueError as e:
            raise ValueError(f"redis broker address {self.address!r}: {e}") from None
        check_positive(
            concurrency=concurrency,
            claim_idle=claim_idle,
            connect_timeout=connect_timeout,
            maxlen=1 if maxlen is None else maxlen,  # None: unbounded
        )
        self.stream_prefix = stream_prefix
        self.maxlen = maxlen
        self.redelivery = Redelivery(max_attempts, backoff, max_backoff)
        self.concurrency = concurrency
        self.claim_idle = claim_idle
        self.connect_timeout = connect_timeout
        self._redis: Redis | None = None
        self._publishing = asyncio.Semaphore(PUBLISHING)
        self._subscriptions: set[_Subscription] = set()

    def _options(self) -> dict[str, Any]:
        return {"socket_connect_timeout": self.connect_timeout, "socket_keepalive": True}

    def _new_reader(self) -> Redis:
        """A connection of its own: a blocked read holds it. No retries inside redis-py:
        the reader retries itself and needs the connection's id to unblock it."""
        return Redis.from_url(
            self.url,
            single_connection_client=True,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            **self._options(),
        )

    def _client(self) -> Redis:
        if self._redis is None:
            raise NotConnected(f"the Redis broker at {self.address}")
        return self._redis

    def _error(self, doing: str, e: Exception) -> BrokerError:
        return BrokerError(f"redis broker at {self.address}: {doing} failed: {e}")

    async def connect(self) -> None:
        if self._redis is not None:
            return
        pool = ConnectionPool.from_url(
            self.url,
            max_connections=2**16,  # bounded by the callers: PUBLISHING, a few per subscription
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            **self._options(),
        )
        client = Redis.from_pool(pool)
        try:
            info = await asyncio.wait_for(client.info("server"), self.connect_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            await client.aclose()
            reason = str(e) or f"no answer in {self.connect_timeout} s"
            raise BrokerError(f"redis broker at {self.address}: unreachable: {reason}") from None
        version = str(info.get("redis_version", "0"))
        if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < MIN_VERSION:
            await client.aclose()
            raise BrokerError(f"redis broker at {self.address}: Redis {version} lacks XAUTOCLAIM")
        self._redis = client

    async def publish(self, envelope: Envelope) -> None:
        stream = self.stream_prefix + envelope.topic
        fields: dict[FieldT, EncodableT] = {"id": envelope.id, "body": envelope.body}
        if envelope.headers:
            fields["headers"] = _encode_headers(tuple(envelope.headers.items()))
        if envelope.content_type != codec.PROTOBUF:
            fields["content-type"] = envelope.content_type
        if needs_timestamp(envelope):
            fields["timestamp"] = repr(envelope.timestamp)
        client = self._client()
        try:
            async with self._publishing:
                await client.xadd(stream, fields, maxlen=self.maxlen)
        except RedisError as e:
            raise self._error(f"publishing to {stream}", e) from None

    async def subscribe(
        self, topic: str, handler: RawHandler, queue: str | None = None
    ) -> _Subscription:
        if queue == "":
            raise ValueError(f"subscription to {topic}: queue must be None or a name")
        sub = _Subscription(self, topic, handler, queue)
        await sub.start()
        self._subscriptions.add(sub)
        return sub

    async def close(self) -> None:
        await asyncio.gather(*(sub.unsubscribe() for sub in list(self._subscriptions)))
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
