"""Pub/sub: the ``Broker`` protocol, envelopes, typed publishers and subscribers.

``MemoryBroker`` lives here; backends with their own client library are imported by
full path (``micro.broker.nats``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from micro.config import Config
    from micro.registry import Registry

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
    "from_config",
    "typed",
]


def from_config(config: Config, registry: Registry) -> Broker:
    """The backend ``MICRO_BROKER`` names (``config.broker``); the grpc broker finds
    subscribers through ``registry``."""
    if config.broker == "memory":
        from micro.broker.memory import shared

        return shared()
    from micro.broker.peer import GrpcBroker

    return GrpcBroker(
        registry, register_ttl=config.register_ttl, register_interval=config.register_interval
    )
