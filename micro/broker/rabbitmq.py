"""A broker on RabbitMQ: one durable topic exchange, durable queues for queue groups.

Publishing sends each envelope to the exchange (``micro`` unless told otherwise) with
the topic as routing key, persistent, and waits for the server's publisher confirm:
when ``publish`` returns, RabbitMQ has the message (on disk, for a durable queue). The
envelope travels in AMQP properties: ``message_id``, ``content_type``, ``timestamp``
(whole seconds, so the exact float also rides in a ``micro-timestamp`` header that
subscribers strip), and its headers as AMQP headers. A topic with no queue bound to
it drops the message, as any pub/sub does.

A subscription binds a queue with the exact topic as binding key. Topics are dotted
(``user.created``), and the dot separates words in a topic exchange, but a binding
key without ``*`` or ``#`` words matches only itself: ``user.created`` does not get
``user.created.dlq``. Topics with such words are refused.

- With a ``queue`` name: the durable queue ``<exchange>.<topic>.<queue>``, shared by
  every subscriber of that name (competing consumers). It outlives its consumers:
  what is published while none runs waits there. Delivery is at least once: a
  message is acked only after its handler returned (or its dead letter was
  confirmed); a consumer that dies (kill -9, lost connection) leaves its messages
  unacked, and RabbitMQ gives them at once to another consumer, flagged
  ``redelivered``. So a handler may see a message twice; make it idempotent.
- Without: an exclusive, auto-deleted queue of this subscriber only (broadcast), from
  the moment of subscribing, gone with its connection: at most once across a crash.

No ordering promise: up to ``prefetch`` messages (the AMQP QoS limit per consumer)
are handled at the same time, and retries delay the ones that fail. A handler that
raises gets the message again in-process after a backoff, while it stays unacked in
the server (``Redelivery``); after ``max_attempts`` it is published to
``<topic>.dlq`` on the same exchange with the reason header, and subscribers of that
topic get it like any other. To keep dead letters, subscribe to ``<topic>.dlq`` with a
queue; with nothing bound there they are dropped, with an error logged.

RabbitMQ's own dead-letter exchange is not used: it is set per queue by arguments fixed
at declaration (redeclaring with other ones fails), it cannot say why a message died
(our reason header), classic queues dead-letter at most once, and it would make
dead letters behave differently here than on every other backend. Publishing the
dead letter with a confirm and then acking gives at least once instead: a crash in
between means a second dead letter, never a lost message.

Attempts count on from what the server knows of earlier deliveries (to consumers that
died): the ``x-delivery-count`` header of quorum queues (a vhost whose default queue
type is quorum makes ours quorum), else at least one for a message flagged
``redelivered``. A message is thus tried ``max_attempts`` times in all on a quorum
queue, however often its consumers crash; a classic queue knows only "delivered
before", so a message that kills every consumer comes back after each crash.

The connection is aio-pika's robust one: once connected, it reconnects and restores
the exchange, queues, bindings and consumers by itself. ``connect`` fails fast, with
the address (never the password) in a ``BrokerError``.

    broker = RabbitBroker("amqp://guest:guest@127.0.0.1:5672/")
    await broker.connect()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import datetime, timezone

try:
    import aio_pika
    from aio_pika.abc import (
        AbstractChannel,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustConnection,
        ConsumerTag,
    )
    from aio_pika.exceptions import ProbableAuthenticationError
    from aiormq.abc import DeliveredMessage
    from pamqp.commands import Basic
    from yarl import URL
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "micro.broker.rabbitmq needs aio-pika: install `micro-grpc[rabbitmq]`"
    ) from None

from micro import codec
from micro.broker.base import (
    BrokerError,
    Envelope,
    NotConnected,
    RawHandler,
    check_positive,
    new_id,
)
from micro.broker.redelivery import Redelivery, Running
from micro.urls import masked

log = logging.getLogger("micro.broker")

TIMESTAMP_HEADER = "micro-timestamp"  # the exact publish time; AMQP's is whole seconds
_DELIVERY_COUNT = "x-delivery-count"  # earlier deliveries, set by quorum queues
_MAX_NAME = 255  # bytes in an AMQP routing key or queue name


class _Subscription:
    def __init__(
        self, broker: RabbitBroker, topic: str, queue: str | None, handler: RawHandler
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.queue = queue
        self.handler = handler
        self.running = Running()
        self.stopped = False
        self.channel: AbstractChannel | None = None
        self.amqp_queue: AbstractQueue | None = None
        self.tag: ConsumerTag | None = None

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.stopped:
            return  # left unacked: closing the channel hands it back to the queue
        self.running.add(asyncio.current_task())  # aio-pika runs each delivery as a task
        await self.broker._handle(self, message)

    async def unsubscribe(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.broker._subscriptions.discard(self)
        if self.amqp_queue is not None and self.tag is not None:
            try:
                await self.amqp_queue.cancel(self.tag)
            except Exception as e:  # the channel is gone: nothing more arrives anyway
                log.debug("cancelling the consumer of %s: %s", self.topic, e)
        await self.running.drain()
        if self.channel is not None:
            await self.channel.close()


class RabbitBroker:
    """``Broker`` on a RabbitMQ server (or cluster node) at ``url``."""

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        exchange: str = "micro",
        max_attempts: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        prefetch: int = 64,
        connect_timeout: float = 2.0,
        reconnect_interval: float = 1.0,
    ) -> None:
        self._url = URL(url)
        if self._url.scheme not in ("amqp", "amqps") or not self._url.host:
            raise ValueError(f"{masked(url)!r} is not an AMQP URL (amqp://user:pass@host:port/)")
        self.address = masked(url)
        check_positive(prefetch=prefetch)
        self.exchange = exchange
        self.redelivery = Redelivery(max_attempts, backoff, max_backoff)
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self.reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._publishing: AbstractChannel | None = None
        self._subscriptions: set[_Subscription] = set()

    async def connect(self) -> None:
        if self._connection is not None:
            return
        connection = aio_pika.RobustConnection(
            self._url, reconnect_interval=self.reconnect_interval
        )
        try:
            await asyncio.wait_for(
                self._open(connection, self.connect_timeout), self.connect_timeout
            )
        except Exception as e:
            await connection.close()
            timeout = isinstance(e, (TimeoutError, asyncio.TimeoutError))
            why = f"no answer in {self.connect_timeout} s" if timeout else _why(e)
            raise BrokerError(f"cannot connect to RabbitMQ at {self.address}: {why}") from None

    async def _open(self, connection: AbstractRobustConnection, timeout: float) -> None:
        await connection.connect(timeout=timeout)
        channel = await connection.channel()  # publisher confirms: publish waits for them
        await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        self._connection, self._publishing = connection, channel

    async def publish(self, envelope: Envelope) -> None:
        await self._send(envelope, mandatory=False)

    async def _send(self, envelope: Envelope, *, mandatory: bool) -> object:
        if self._publishing is None:
            raise NotConnected(f"the RabbitMQ broker at {self.address}")
        # Properties built directly: an aio_pika.Message costs five times as much.
        properties = Basic.Properties(
            content_type=envelope.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={**envelope.headers, TIMESTAMP_HEADER: repr(envelope.timestamp)},
            message_id=envelope.id,
            timestamp=datetime.fromtimestamp(envelope.timestamp, timezone.utc),
        )
        try:
            channel = await self._publishing.get_underlay_channel()
            return await channel.basic_publish(
                envelope.body,
                exchange=self.exchange,
                routing_key=envelope.topic,
                properties=properties,
                mandatory=mandatory,
            )
        except Exception as e:
            raise BrokerError(
                f"cannot publish {envelope.id} to {envelope.topic} on {self.address}: {_why(e)}"
            ) from None

    async def _dead_letter(self, envelope: Envelope) -> None:
        if isinstance(await self._send(envelope, mandatory=True), DeliveredMessage):
            log.error(
                "dead letter %s dropped: no queue is bound to %s (subscribe to it to keep them)",
                envelope.id,
                envelope.topic,
            )

    async def subscribe(
        self, topic: str, handler: RawHandler, queue: str | None = None
    ) -> _Subscription:
        if self._connection is None:
            raise NotConnected(f"the RabbitMQ broker at {self.address}")
        name = self._queue_name(topic, queue)
        sub = _Subscription(self, topic, queue, handler)
        sub.channel = channel = self._connection.channel(publisher_confirms=False)
        try:
            await channel.initialize()
            await channel.set_qos(prefetch_count=self.prefetch)
            if queue is None:
                amqp_queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
            else:
                amqp_queue = await channel.declare_queue(name, durable=True)
            await amqp_queue.bind(self.exchange, routing_key=topic)
            sub.amqp_queue = amqp_queue
            sub.tag = await amqp_queue.consume(sub.on_message)
        except Exception as e:
            with contextlib.suppress(Exception):
                await channel.close()
            raise BrokerError(
                f"cannot subscribe to {topic} (queue {name}) on {self.address}: {_why(e)}"
            ) from None
        self._subscriptions.add(sub)
        return sub

    def _queue_name(self, topic: str, queue: str | None) -> str:
        if not topic or {"*", "#"} & set(topic.split(".")):
            raise BrokerError(
                f"cannot subscribe to topic {topic!r}: it must be non-empty and without "
                "'*' or '#' words, which RabbitMQ reads as wildcards"
            )
        name = f"{self.exchange}.{topic}.{queue or uuid.uuid4().hex}"
        if len(name.encode()) > _MAX_NAME:
            raise BrokerError(f"queue name {name!r} is longer than {_MAX_NAME} bytes")
        return name

    async def _handle(self, sub: _Subscription, message: AbstractIncomingMessage) -> None:
        envelope = incoming(message, sub.topic)  # attempt: the server's deliveries
        try:
            await self.redelivery.run(sub.handler, envelope, self._dead_letter)
        except BrokerError as e:
            log.error(
                "message %s of %s back to its queue, not dead-lettered: %s",
                envelope.id,
                sub.topic,
                e,
            )
            await _settle(message.nack(requeue=True), envelope)
            return
        await _settle(message.ack(), envelope)

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.unsubscribe()
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._publishing = None


async def _settle(outcome: Awaitable[None], envelope: Envelope) -> None:
    """Acks and nacks fail only with the channel, which gives the message back."""
    try:
        await outcome
    except Exception as e:
        log.warning(
            "could not settle message %s of %s, RabbitMQ will deliver it again: %s",
            envelope.id,
            envelope.topic,
            _why(e),
        )


def incoming(message: AbstractIncomingMessage, topic: str) -> Envelope:
    """The envelope of a delivered message. Anything a foreign publisher left out has a
    stand-in: a new id, protobuf binary, the time of arrival."""
    raw = message.headers or {}
    headers = {key: _text(value) for key, value in raw.items()}
    timestamp = _float(headers.pop(TIMESTAMP_HEADER, None))
    if timestamp is None:
        timestamp = message.timestamp.timestamp() if message.timestamp else time.time()
    earlier = raw.get(_DELIVERY_COUNT)
    redelivered = 1 if message.redelivered else 0
    attempt = 1 + (earlier if isinstance(earlier, int) else redelivered)
    return Envelope(
        topic,
        message.body,
        message.content_type or codec.PROTOBUF,
        headers,
        message.message_id or new_id(),
        timestamp,
        attempt,
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _why(e: BaseException) -> str:
    if isinstance(e, ProbableAuthenticationError):
        return "login refused (wrong user name or password?)"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
