"""What a test sees of pub/sub: every message published, typed and in order, and what
became of a message delivered to a subscriber (acked, retried, dead-lettered).

``RecordingBroker`` is the memory broker with a record kept on both sides: its
``publish`` notes each envelope (dead letters too: redelivery publishes them through
it), and every subscription's handler is watched, attempt by attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from google.protobuf.message import Message

from micro import codec
from micro.broker import (
    Envelope,
    MemoryBroker,
    RawHandler,
    Subscription,
    Undeliverable,
    dead_letter_topic,
)
from micro.broker.base import DEAD_LETTER_SUFFIX, TYPE_HEADER

M = TypeVar("M", bound=Message)

Outcome = Literal["acked", "dead-lettered", "dropped"]
"""``dropped``: a dead letter whose own handling failed (there are no dead letters of
dead letters)."""


@dataclass
class Delivery:
    """What one subscriber did with one message: ``outcome`` after ``attempts``
    deliveries, and why each failed attempt failed (``errors``, in order)."""

    topic: str
    id: str
    outcome: Outcome | None = None  # None while attempts are still to come
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def retried(self) -> bool:
        return self.attempts > 1


class _Watched:
    """A subscription whose handler's every attempt is recorded in ``deliveries``."""

    def __init__(
        self, broker: RecordingBroker, inner: Subscription, deliveries: dict[str, Delivery]
    ) -> None:
        self.broker = broker
        self.inner = inner
        self.topic = inner.topic
        self.queue = inner.queue
        self.deliveries = deliveries  # by message id

    async def unsubscribe(self) -> None:
        if self in self.broker.subscriptions:
            self.broker.subscriptions.remove(self)
        await self.inner.unsubscribe()


class RecordingBroker(MemoryBroker):
    """An in-process broker that keeps what passes through it, for tests to await."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Envelope] = []  # every message, in publishing order
        self.subscriptions: list[_Watched] = []
        self._changed = asyncio.Condition()

    async def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope)
        await self._tell()
        await super().publish(envelope)

    async def subscribe(  # type: ignore[override]  # MemoryBroker's names its own class
        self, topic: str, handler: RawHandler, queue: str | None = None
    ) -> Subscription:
        deliveries: dict[str, Delivery] = {}
        inner = await super().subscribe(topic, self._watch(deliveries, handler), queue)
        watched = _Watched(self, inner, deliveries)
        self.subscriptions.append(watched)
        return watched

    def _watch(self, deliveries: dict[str, Delivery], handler: RawHandler) -> RawHandler:
        last = self.redelivery.max_attempts

        async def attempt(envelope: Envelope) -> None:
            delivery = deliveries.setdefault(envelope.id, Delivery(envelope.topic, envelope.id))
            delivery.attempts += 1
            try:
                await handler(envelope)
            except Exception as e:
                delivery.errors.append(f"{type(e).__name__}: {e}")
                if isinstance(e, Undeliverable) or envelope.attempt >= last:
                    dead = envelope.topic.endswith(DEAD_LETTER_SUFFIX)
                    delivery.outcome = "dropped" if dead else "dead-lettered"
                raise
            else:
                delivery.outcome = "acked"
            finally:
                await self._tell()

        return attempt

    async def _tell(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(
        self, done: Callable[[], bool], timeout: float, waiting_for: Callable[[], str]
    ) -> None:
        """Until ``done()`` holds after a publish or a delivery attempt; after
        ``timeout`` seconds, ``TimeoutError`` saying what was awaited and what came."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(done), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{waiting_for()}: not within {timeout} s") from None

    def receivers(self, topic: str) -> int:
        """How many deliveries a message on ``topic`` makes: one per subscriber without
        a queue, one per queue."""
        mine = [s for s in self.subscriptions if s.topic == topic]
        return sum(s.queue is None for s in mine) + len({s.queue for s in mine} - {None})

    def deliveries(self, message_id: str) -> list[Delivery]:
        return [d for s in self.subscriptions if (d := s.deliveries.get(message_id)) is not None]

    def settled(self, message_id: str, receivers: int) -> bool:
        """Whether every receiver has handled the message or given it up, and every
        dead letter it made has been published."""
        deliveries = self.deliveries(message_id)
        if len(deliveries) < receivers or any(d.outcome is None for d in deliveries):
            return False
        dead = sum(d.outcome == "dead-lettered" for d in deliveries)
        topic = dead_letter_topic(deliveries[0].topic) if deliveries else ""
        return dead <= sum(e.id == message_id and e.topic == topic for e in self.published)


def decoded(envelopes: list[Envelope], topic: str, kind: type[M]) -> list[M]:
    """The messages published on ``topic``, as ``kind``; an error naming the topic and
    message if one is of another type."""
    name = kind.DESCRIPTOR.full_name
    found = []
    for e in envelopes:
        if e.topic != topic:
            continue
        sent = e.headers.get(TYPE_HEADER, name)
        if sent != name:
            raise TypeError(f"message {e.id} on {topic} is a {sent}, not a {name}")
        found.append(codec.decode(e.body, kind, e.content_type))
    return found
