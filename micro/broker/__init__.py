"""Pub/sub: the ``Broker`` protocol, envelopes, typed publishers and subscribers.

``MemoryBroker`` lives here; backends with their own client library are imported by
full path (``micro.broker.nats``).
"""

from micro.broker.base import (
    Broker,
    BrokerError,
    Envelope,
    RawHandler,
    Subscription,
    Undeliverable,
    dead_letter_topic,
)
from micro.broker.events import EventContext, Publisher, typed
from micro.broker.memory import MemoryBroker

__all__ = [
    "Broker",
    "BrokerError",
    "Envelope",
    "EventContext",
    "MemoryBroker",
    "Publisher",
    "RawHandler",
    "Subscription",
    "Undeliverable",
    "dead_letter_topic",
    "typed",
]
