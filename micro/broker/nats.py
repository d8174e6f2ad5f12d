"""A broker on NATS: core subjects, or JetStream streams and consumers.

Core mode (``jetstream=False``): a topic is a subject and a queue is a NATS queue
group. Delivery is at most once: the server stores nothing, so a message published
while no subscriber runs is gone, and so are the messages a crashed subscriber held.
While a subscriber lives, a handler that raises gets the message again after a
backoff (in-process), and after ``max_attempts`` it goes to the subject
``<topic>.dlq``. Messages from one publisher arrive in order; handlers run
concurrently, so they may finish in any order. ``publish`` returns once the message
is in the client's buffer (``flush`` waits until the server has read it).

JetStream mode (``jetstream=True``): each topic has a stream of its own,
``<stream_prefix>_<topic>`` (characters a stream name cannot hold are escaped), made
on first use with interest retention: a message is kept until every consumer that
existed when it was published has acked it (or ``max_age`` passed). ``publish``
returns once the stream has stored the message, so it is durable from then on. A
queue is a durable pull consumer named after the queue: its subscribers, in any
process, compete for messages, and messages published while none of them runs wait
for them. No queue means an ephemeral consumer that gets the messages published from
``subscribe`` on (broadcast) and is deleted on ``unsubscribe`` (or by the server,
``ephemeral_idle`` seconds after its process died). A message is acked after its
handler returns, or after it was dead-lettered; while a handler (with its in-process
retries) runs, the broker tells the server it is still in progress. A subscriber
killed mid-message leaves it un-acked, and the server delivers it again ``ack_wait``
seconds later: at least once, with duplicates possible after a crash. The server's
delivery count carries on the attempt count, so a message redelivered after a crash
does not get ``max_attempts`` fresh attempts. Dead letters go to the stream of
``<topic>.dlq``, which keeps them for ``max_age`` whether or not anyone listens.

On the wire the body is the payload and the envelope travels in NATS headers:
``Nats-Msg-Id`` (the id; JetStream drops a re-published id within its duplicate
window), ``Content-Type`` (left out for protobuf binary), ``Micro-Timestamp`` (in
JetStream mode left out within a second of the publish: the time the stream stored
the message stands for it, and a core subscriber of the subject takes the arrival
time) and the envelope's own headers. Few headers, because nats-py writes and parses
each one in Python: on a core message they cost more than everything else. Header
names must be ASCII tokens, values one line without surrounding whitespace; both
are checked at ``publish``. A message from a foreign client without them is handled
as protobuf binary with an id derived from its stream position (or a fresh one).

Each subscription runs at most ``concurrency`` handlers at a time: core messages
beyond that wait in the client's buffer, and a JetStream subscription asks the server
only for as many messages as it has free handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

try:
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client as _Nats
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as _NatsSubscription
    from nats.js import JetStreamContext, JetStreamManager, api
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("micro.broker.nats needs nats-py: install `micro-grpc[nats]`") from None

from micro import codec
from micro.broker.base import (
    DEAD_LETTER_SUFFIX,
    REASON_HEADER,
    BrokerError,
    Envelope,
    NotConnected,
    RawHandler,
    check_positive,
    needs_timestamp,
    new_id,
)
from micro.broker.credit import PullCredit
from micro.broker.redelivery import Redelivery, Running, start
from micro.urls import masked_all

log = logging.getLogger("micro.broker")

ID_HEADER = "Nats-Msg-Id"
CONTENT_TYPE_HEADER = "Content-Type"
TIMESTAMP_HEADER = "Micro-Timestamp"
_OURS = {CONTENT_TYPE_HEADER.lower(), TIMESTAMP_HEADER.lower()}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # what NATS allows in a header name
_SAFE = re.compile(r"[A-Za-z0-9-]")
_BAD_SUBJECT = re.compile(r"\s")

# JetStream error codes
_STREAM_NAME_IN_USE = 10058  # a stream of that name exists with another configuration
_SUBJECTS_OVERLAP = 10065  # another stream already captures the topic


def safe_name(text: str) -> str:
    """``text`` as a stream or consumer name: letters, digits and ``-`` stay, every
    other byte becomes ``_XX`` (hex), so distinct topics never share a name."""
    return "".join(
        c if _SAFE.fullmatch(c) else "".join(f"_{b:02X}" for b in c.encode()) for c in text
    )


@functools.lru_cache(maxsize=4096)  # publish checks its topic every time
def _check_topic(topic: str) -> str:
    tokens = topic.split(".")
    if not topic or _BAD_SUBJECT.search(topic) or not all(tokens) or {"*", ">"} & set(tokens):
        raise BrokerError(
            f"topic {topic!r} is not a NATS subject: use non-empty dot-separated tokens "
            "without spaces or wildcards"
        )
    return topic


@functools.lru_cache(maxsize=4096)
def _user_header(key: str) -> bool:
    lower = key.lower()
    return bool(_TOKEN.fullmatch(key)) and not lower.startswith("nats-") and lower not in _OURS


def _headers(envelope: Envelope, stored: bool) -> dict[str, str]:
    """The NATS headers of ``envelope``; ``stored``: JetStream timestamps it."""
    headers = {ID_HEADER: envelope.id}
    if not stored or needs_timestamp(envelope):
        headers[TIMESTAMP_HEADER] = repr(envelope.timestamp)
    if envelope.content_type != codec.PROTOBUF:  # the default needs no header
        headers[CONTENT_TYPE_HEADER] = envelope.content_type
    for key, value in envelope.headers.items():
        if not _user_header(key):
            raise BrokerError(
                f"header {key!r} on {envelope.topic}: a NATS header name is an ASCII token "
                f"other than Nats-*, {CONTENT_TYPE_HEADER} and {TIMESTAMP_HEADER}"
            )
        if value != value.strip() or "\n" in value or "\r" in value:
            raise BrokerError(
                f"header {key!r} on {envelope.topic}: a NATS header value is one line "
                f"without surrounding whitespace, not {value!r}"
            )
        headers[key] = value
    return headers


def _envelope(
    topic: str, msg: Msg, default_id: Callable[[], str], default_time: float, attempt: int = 1
) -> Envelope:
    """The envelope a message carries; what a foreign publisher left out gets defaults.
    ``attempt`` is the server's delivery count (JetStream), 1 in core mode."""
    headers: dict[str, str] = {}
    message_id = content_type = stamp = None
    for key, value in (msg.headers or {}).items():
        lower = key.lower()
        if lower == "nats-msg-id":
            message_id = value
        elif lower == "content-type":
            content_type = value
        elif lower == "micro-timestamp":
            stamp = value
        elif not lower.startswith("nats-"):
            headers[key] = value
    timestamp = default_time
    if stamp is not None:
        try:
            timestamp = float(stamp)
        except ValueError:
            log.warning(
                "message %s of %s: %s %r is not a number; using the arrival time",
                message_id,
                topic,
                TIMESTAMP_HEADER,
                stamp,
            )
    return Envelope(
        topic,
        msg.data,
        content_type or codec.PROTOBUF,
        headers,
        message_id or default_id(),
        timestamp,
        attempt,
    )


async def settle(nc: _Nats, timeout: float) -> None:
    """Return once the server has read everything sent on ``nc`` so far.

    ``flush()`` is not enough: nats-py writes its PING straight to the socket, ahead of
    commands still in its buffer, so the PONG can come back before a SUB was read. A
    request to a subject nobody serves travels in order, and its no-responders answer
    comes after the server has read all that preceded it.
    """
    with contextlib.suppress(nats.errors.NoRespondersError):
        await nc.request(nc.new_inbox(), b"", timeout=timeout)
        raise nats.errors.Error("a request to a fresh inbox found a responder")


class NatsBroker:
    """``Broker`` on NATS servers: ``servers`` is one URL, a comma-separated string of
    them or a sequence. See the module docstring for what each mode guarantees.

    broker = NatsBroker("nats://127.0.0.1:4222", jetstream=True)
    await broker.connect()
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        jetstream: bool = False,
        stream_prefix: str = "micro",
        max_attempts: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        concurrency: int = 64,
        ack_wait: float = 5.0,
        max_age: float = 7 * 24 * 3600.0,
        replicas: int = 1,
        ephemeral_idle: float = 30.0,
        connect_timeout: float = 2.0,
        request_timeout: float = 5.0,
        reconnect_wait: float = 0.2,
    ) -> None:
        if isinstance(servers, str):
            servers = servers.split(",")
        self.servers = [s.strip() for s in servers if s.strip()]
        if not self.servers:
            raise ValueError("NatsBroker needs at least one server URL")
        check_positive(concurrency=concurrency, ack_wait=ack_wait)
        if not stream_prefix or safe_name(stream_prefix) != stream_prefix:
            raise ValueError(f"stream_prefix={stream_prefix!r}: use letters, digits and '-'")
        self.jetstream = jetstream
        self.stream_prefix = stream_prefix
        self.redelivery = Redelivery(max_attempts, backoff, max_backoff)
        self.concurrency = concurrency
        self.ack_wait = ack_wait
        self.max_age = max_age
        self.replicas = replicas
        self.ephemeral_idle = ephemeral_idle
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.reconnect_wait = reconnect_wait
        self._nc: _Nats | None = None
        self._js: JetStreamContext | None = None
        self._jsm: JetStreamManager | None = None
        self._streams: dict[str, asyncio.Future[str]] = {}
        self._subscriptions: set[_CoreSubscription | _PullSubscription] = set()

    def __repr__(self) -> str:
        mode = ", jetstream=True" if self.jetstream else ""
        return f"NatsBroker({self.where!r}{mode})"

    @property
    def where(self) -> str:
        """The servers, for messages: no passwords."""
        return masked_all(self.servers)

    # -- connection ---------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None:
            return

        async def on_error(e: Exception) -> None:
            log.warning("NATS broker at %s: %r", self.where, e)

        async def on_disconnect() -> None:
            if self._nc is None:  # closing
                return
            log.warning("NATS broker at %s: connection lost, reconnecting", self.where)

        async def on_reconnect() -> None:
            log.info("NATS broker at %s: reconnected", self.where)
            for sub in list(self._subscriptions):
                if isinstance(sub, _PullSubscription):
                    await sub.reconnected()

        nc = _Nats()
        try:
            # Fail fast at start (one retry per server); once up, reconnect forever.
            await asyncio.wait_for(
                nc.connect(
                    servers=self.servers,
                    connect_timeout=self.connect_timeout,  # type: ignore[arg-type]
                    allow_reconnect=True,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=self.reconnect_wait,  # type: ignore[arg-type]
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                self.connect_timeout * (len(self.servers) + 1),
            )
            if self.jetstream:
                await nc.jsm(timeout=self.request_timeout).account_info()
        except (OSError, asyncio.TimeoutError, nats.errors.Error) as e:
            with contextlib.suppress(Exception):
                await nc.close()
            what = "JetStream" if isinstance(e, nats.js.errors.Error) else "NATS"
            raise BrokerError(f"{what} at {self.where} is unreachable: {e!r}") from None
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = nc.jetstream(timeout=self.request_timeout)
        self._jsm = nc.jsm(timeout=self.request_timeout)

    def _connection(self) -> _Nats:
        if self._nc is None:
            raise NotConnected(repr(self))
        return self._nc

    def _manager(self) -> JetStreamManager:
        if self._jsm is None:
            raise NotConnected(repr(self))
        return self._jsm

    async def close(self) -> None:
        await asyncio.gather(*(sub.unsubscribe() for sub in list(self._subscriptions)))
        nc, self._nc, self._js, self._jsm = self._nc, None, None, None
        self._streams.clear()
        if nc is not None:
            await nc.close()  # writes what is still buffered (acks, core messages) first

    async def flush(self) -> None:
        """Wait until the server has read every message published so far (in core
        mode ``publish`` returns once the message is in the client's buffer)."""
        try:
            await settle(self._connection(), self.request_timeout)
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            raise BrokerError(f"NATS at {self.where}: flush failed: {e!r}") from None

    # -- publishing ---------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        nc = self._connection()
        subject = _check_topic(envelope.topic)
        headers = _headers(envelope, self.jetstream)
        try:
            if not self.jetstream:
                await nc.publish(subject, envelope.body, headers=headers)
                return
            await self._stream(subject)
            js = self._js
            assert js is not None
            try:
                await js.publish(subject, envelope.body, headers=headers)
            except nats.js.errors.NoStreamResponseError:  # the stream was deleted: make it again
                self._streams.pop(subject, None)
                await self._stream(subject)
                await js.publish(subject, envelope.body, headers=headers)
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            raise BrokerError(
                f"NATS at {self.where} did not take message {envelope.id} of {subject}: {e!r}"
            ) from None

    async def _dead_letter(self, envelope: Envelope) -> None:
        # The reason is an exception's text: make it the one-line header NATS can carry.
        reason = " ".join(envelope.headers.get(REASON_HEADER, "").split())
        await self.publish(replace(envelope, headers={**envelope.headers, REASON_HEADER: reason}))

    # -- JetStream streams and consumers -----------------------------------------

    async def _stream(self, topic: str) -> str:
        """The name of the stream that stores ``topic``, made once per broker."""
        future = self._streams.get(topic)
        if (
            future is not None
            and future.done()
            and not future.cancelled()
            and future.exception() is None
        ):
            return future.result()  # the usual case: no shield (a future) per publish
        if future is None:
            future = self._streams[topic] = asyncio.ensure_future(self._make_stream(topic))
        try:
            return await asyncio.shield(future)
        except BaseException:
            if future.done() and self._streams.get(topic) is future:
                del self._streams[topic]  # the next call tries again
            raise

    async def _make_stream(self, topic: str) -> str:
        jsm = self._manager()
        name = f"{self.stream_prefix}_{safe_name(topic)}"
        dead_letters = topic.endswith(DEAD_LETTER_SUFFIX)
        config = api.StreamConfig(
            name=name,
            subjects=[topic],
            # Dead letters are kept for inspection even with no consumer; other
            # messages only for the consumers that exist when they arrive.
            retention=api.RetentionPolicy.LIMITS if dead_letters else api.RetentionPolicy.INTEREST,
            max_age=self.max_age,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
        )
        try:
            await jsm.add_stream(config)
            return name
        except nats.js.errors.APIError as e:
            if e.err_code == _STREAM_NAME_IN_USE:
                log.info("stream %s of %s exists with another configuration: using it", name, topic)
                return name
            if e.err_code == _SUBJECTS_OVERLAP:
                return await jsm.find_stream_name_by_subject(topic)
            raise BrokerError(f"JetStream at {self.where}: no stream for {topic}: {e}") from None
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            raise BrokerError(f"JetStream at {self.where}: no stream for {topic}: {e!r}") from None

    async def _consumer(self, stream: str, topic: str, queue: str | None) -> str:
        """Make (or update) the consumer a subscription pulls from; returns its name."""
        jsm = self._manager()
        if queue is None:
            name = uuid.uuid4().hex
            config = api.ConsumerConfig(
                name=name,
                deliver_policy=api.DeliverPolicy.NEW,
                inactive_threshold=self.ephemeral_idle,
            )
        else:
            name = safe_name(queue)
            config = api.ConsumerConfig(
                name=name, durable_name=name, deliver_policy=api.DeliverPolicy.ALL
            )
        config.ack_policy = api.AckPolicy.EXPLICIT
        config.ack_wait = self.ack_wait
        config.max_deliver = -1  # the broker dead-letters, not the server
        config.filter_subject = topic
        try:
            await jsm.add_consumer(stream, config)
        except nats.js.errors.APIError as e:
            try:  # made by another process with settings that cannot change: use it
                await jsm.consumer_info(stream, name)
                log.warning("consumer %s of %s kept its own configuration: %s", name, topic, e)
            except (asyncio.TimeoutError, nats.errors.Error):
                raise BrokerError(
                    f"JetStream at {self.where}: no consumer {name} for {topic}: {e}"
                ) from None
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            raise BrokerError(
                f"JetStream at {self.where}: no consumer {name} for {topic}: {e!r}"
            ) from None
        return name

    # -- subscribing --------------------------------------------------------------

    async def subscribe(
        self, topic: str, handler: RawHandler, queue: str | None = None
    ) -> _CoreSubscription | _PullSubscription:
        nc = self._connection()
        subject = _check_topic(topic)
        if queue is not None and (not queue or _BAD_SUBJECT.search(queue)):
            raise BrokerError(f"queue {queue!r} of {topic}: use a non-empty name without spaces")
        sub: _CoreSubscription | _PullSubscription
        try:
            if self.jetstream:
                stream = await self._stream(subject)
                consumer = await self._consumer(stream, subject, queue)
                sub = _PullSubscription(self, subject, handler, queue, stream, consumer)
            else:
                sub = _CoreSubscription(self, subject, handler, queue)
            await sub.start(nc)
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            raise BrokerError(f"NATS at {self.where}: cannot subscribe to {topic}: {e!r}") from None
        self._subscriptions.add(sub)
        return sub


class _Subscription:
    """What both modes share: handlers bounded, drained on unsubscribe."""

    def __init__(self, broker: NatsBroker, topic: str, handler: RawHandler, queue: str | None):
        self.broker = broker
        self.topic = topic
        self.queue = queue
        self.handler = handler
        # Deliveries that had to wait: most finish at once (``start``), taking no room.
        # While ``concurrency`` are under way, later messages wait in the client's buffer.
        self._running = Running()
        self._sub: _NatsSubscription | None = None
        self._stopping = False

    async def _stop_receiving(self) -> None:
        """Stop taking messages; those already here are still handled. Returns once
        the server has dropped the subscription (see ``settle``; in the moment between
        nats-py's drain and that, a core message may still come and be dropped)."""
        self._stopping = True
        sub, self._sub = self._sub, None
        if sub is None:
            return
        nc = self.broker._nc
        try:
            if nc is not None and nc.is_connected:
                timeout = self.broker.request_timeout
                await asyncio.wait_for(sub.drain(), timeout)  # type: ignore[no-untyped-call]
                await settle(nc, timeout)
                return
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            log.warning("subscription to %s not drained: %r", self.topic, e)
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


class _CoreSubscription(_Subscription):
    async def start(self, nc: _Nats) -> None:
        self._sub = await nc.subscribe(self.topic, queue=self.queue or "", cb=self._on_message)
        await settle(nc, self.broker.request_timeout)  # the server has it before we return

    async def _on_message(self, msg: Msg) -> None:
        if len(self._running) >= self.broker.concurrency:  # most messages find room
            await self._running.room(self.broker.concurrency)
        self._running.add(start(self._handle(msg)))

    async def _handle(self, msg: Msg) -> None:
        try:
            envelope = _envelope(self.topic, msg, new_id, time.time())
            await self.broker.redelivery.run(self.handler, envelope, self.broker._dead_letter)
        except Exception as e:  # the dead letter could not be published
            log.error("message of %s lost: %r", self.topic, e)

    async def unsubscribe(self) -> None:
        self.broker._subscriptions.discard(self)
        await self._stop_receiving()
        await self._running.drain()


class _Held:
    """A message a handler is working on, and when the server last heard of it."""

    __slots__ = ("heard", "msg")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        self.heard = time.monotonic()


class _PullSubscription(_Subscription):
    """Pulls from a JetStream consumer into its own inbox, asking for no more
    messages than it has free handlers (in-flight requests count as taken)."""

    def __init__(
        self,
        broker: NatsBroker,
        topic: str,
        handler: RawHandler,
        queue: str | None,
        stream: str,
        consumer: str,
    ) -> None:
        super().__init__(broker, topic, handler, queue)
        self.stream = stream
        self.consumer = consumer
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._credit = PullCredit(broker.concurrency)
        self._held: set[_Held] = set()
        self._lost = False  # the consumer is gone on the server
        self._tick = min(1.0, broker.ack_wait / 3)
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, nc: _Nats) -> None:
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=self._on_message)
        self._ticker = asyncio.ensure_future(self._keep_alive())
        await self._pull()

    async def _pull(self) -> None:
        nc = self.broker._nc
        if self._stopping or self._lost or nc is None or self._sub is None:
            return
        pull = self._credit.pull(len(self._held), time.monotonic())
        if pull is None:
            return
        body = {"batch": pull.batch, "expires": int(self._credit.expires * 1e9)}
        try:
            await nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)
        except nats.errors.Error as e:
            log.warning("cannot pull from %s of %s: %r", self.consumer, self.topic, e)
            self._credit.forget(pull)

    async def _on_message(self, msg: Msg) -> None:
        if not msg.reply:  # a status from the server, about our oldest pull request
            await self._on_status(msg)
            return
        if self._stopping:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()  # to another subscriber, now
            return
        if len(self._running) >= self.broker.concurrency:  # most messages find room
            await self._running.room(self.broker.concurrency)
        self._credit.took_one()
        held = _Held(msg)
        self._held.add(held)
        self._running.add(start(self._handle(held)))

    async def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status", "")
        if status == "100":  # idle heartbeat
            return
        self._credit.ended()  # expired (408), refused (409) or no consumer
        if status == "503" or "Consumer Deleted" in str(headers.get(api.Header.DESCRIPTION)):
            log.warning("consumer %s of %s is gone; making it again", self.consumer, self.topic)
            self._lost = True
        elif status not in ("404", "408"):
            log.warning(
                "pull from %s of %s: %s %s",
                self.consumer,
                self.topic,
                status,
                headers.get(api.Header.DESCRIPTION),
            )
        await self._pull()

    async def _handle(self, held: _Held) -> None:
        msg = held.msg
        try:
            meta = msg.metadata
            envelope = _envelope(
                self.topic,
                msg,
                lambda: f"{meta.stream}-{meta.sequence.stream}",
                meta.timestamp.timestamp(),
                meta.num_delivered,  # attempts before a crash count against max_attempts
            )
            await self.broker.redelivery.run(self.handler, envelope, self.broker._dead_letter)
            await msg.ack()
        except Exception as e:  # dead letter or ack not sent: the server will redeliver
            log.error(
                "message of %s left un-acked, redelivered after %s s: %r",
                self.topic,
                self.broker.ack_wait,
                e,
            )
        finally:
            self._held.discard(held)
            await self._pull()

    async def _keep_alive(self) -> None:
        """Every tick: tell the server which messages are still being handled (so it
        does not redeliver them after ``ack_wait``), forget pull requests whose end
        never came (a reconnect drops them), make a lost consumer again."""
        while True:
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            self._credit.expire(now, self._tick)
            for held in list(self._held):
                if now - held.heard >= self.broker.ack_wait / 3:
                    held.heard = now
                    with contextlib.suppress(nats.errors.Error):
                        await held.msg.in_progress()
            if self._lost and not self._stopping:
                try:
                    self.consumer = await self.broker._consumer(self.stream, self.topic, self.queue)
                    self._next = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
                    self._lost = False
                except BrokerError as e:
                    log.warning("%s; trying again", e)
            await self._pull()

    async def reconnected(self) -> None:
        """Pull requests died with the old connection: ask again."""
        self._credit.clear()
        await self._pull()

    async def unsubscribe(self) -> None:
        self.broker._subscriptions.discard(self)
        await self._stop_receiving()
        await self._running.drain()  # the ticker keeps their acks in progress meanwhile
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        nc = self.broker._nc
        if self.queue is None and nc is not None and nc.is_connected:
            with contextlib.suppress(asyncio.TimeoutError, nats.errors.Error):
                await self.broker._manager().delete_consumer(self.stream, self.consumer)
