"""The broker model: envelopes, the ``Broker`` protocol, its errors.

Backends move ``Envelope``s; typing (proto message classes) lives a layer above, in
``micro.broker.events``, so every backend carries the same envelope and gets typed
publishers and subscribers for free.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

TYPE_HEADER = "micro-type"  # full name of the payload's message type
DEADLINE_HEADER = "micro-deadline"  # absolute deadline (epoch seconds) of the publishing call
REASON_HEADER = "micro-dead-reason"  # why a message was dead-lettered


class BrokerError(Exception):
    """The broker failed or is unreachable; the message names it."""


class NotConnected(BrokerError):
    """Used before ``connect``: says what a user of ``micro.Service`` does about it."""

    def __init__(self, broker: str) -> None:
        super().__init__(
            f"{broker} is not connected: start the service first (await service.start(), "
            "or service.run()); a broker used on its own needs await broker.connect()"
        )


class Undeliverable(BrokerError):
    """This message can never be handled (garbage, wrong type): dead-letter it now
    instead of retrying."""


DEAD_LETTER_SUFFIX = ".dlq"

# Seconds: a message its backend stores within them of its publish is timestamped by
# the store (JetStream, a Redis entry id), so its own timestamp need not travel.
FRESH = 1.0

# Message ids: 128 random bits from a generator seeded once per process from
# os.urandom, and again in a forked child (which would otherwise repeat its parent's
# ids). uuid4 reads os.urandom for every id, about 15 times the cost; only someone
# who can already publish could make use of ids being predictable. A generator of
# its own, so a program that seeds ``random`` (for reproducible tests) repeats none.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_id() -> str:
    """A message id: 32 hex digits, unique across processes and hosts."""
    return _ids.getrandbits(128).to_bytes(16, "big").hex()


def dead_letter_topic(topic: str) -> str:
    return topic + DEAD_LETTER_SUFFIX


def needs_timestamp(envelope: Envelope) -> bool:
    """Whether the time a store gives a message cannot stand for ``envelope``'s own:
    it was published more than ``FRESH`` seconds ago (a dead letter keeps its original's)."""
    return time.time() - envelope.timestamp > FRESH


def check_positive(**options: float) -> None:
    """A backend's numeric options: ``ValueError`` naming the first that is not > 0."""
    for name, value in options.items():
        if not value > 0:
            raise ValueError(f"{name}={value!r}: must be > 0")


@dataclass(slots=True)
class Envelope:
    """One message as every backend carries it. ``attempt`` counts deliveries.

    Treat it as immutable (``dataclasses.replace`` makes changed copies): it is not
    frozen only because a frozen dataclass takes three times as long to build, and
    every message builds one on each side.
    """

    topic: str
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    timestamp: float = field(default_factory=time.time)
    attempt: int = 1


RawHandler: TypeAlias = Callable[[Envelope], Awaitable[None]]
"""Returns to ack; raises to have the message delivered again (``Undeliverable``: never)."""


@runtime_checkable
class Subscription(Protocol):
    topic: str
    queue: str | None

    async def unsubscribe(self) -> None:
        """Stop receiving; returns once the handlers already running have finished."""


@runtime_checkable
class Broker(Protocol):
    """What every backend provides. A ``queue`` name makes subscribers of that name
    compete for each message; subscribers without one each get every message."""

    async def connect(self) -> None:
        """Reach the broker; raises ``BrokerError`` naming the address if it cannot."""

    async def publish(self, envelope: Envelope) -> None: ...

    async def subscribe(
        self, topic: str, handler: RawHandler, queue: str | None = None
    ) -> Subscription: ...

    async def close(self) -> None: ...
