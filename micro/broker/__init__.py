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
from micro.config import ConfigError
from micro.urls import masked_all

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
    if config.broker in ("nats", "jetstream"):
        from micro.broker.nats import NatsBroker

        return NatsBroker(
            config.broker_address or ("nats://127.0.0.1:4222",),
            jetstream=config.broker == "jetstream",
        )
    if config.broker == "redis":
        from micro.broker.redis import RedisBroker

        return RedisBroker(*_one_address(config))
    if config.broker == "rabbitmq":
        from micro.broker.rabbitmq import RabbitBroker

        return RabbitBroker(*_one_address(config))
    from micro.broker.peer import GrpcBroker

    return GrpcBroker(
        registry, register_ttl=config.register_ttl, register_interval=config.register_interval
    )


def _one_address(config: Config) -> tuple[str, ...]:
    """The one URL a Redis or RabbitMQ broker takes (none: the backend's default)."""
    if len(config.broker_address) > 1:
        raise ConfigError(
            f"MICRO_BROKER_ADDRESS={masked_all(config.broker_address)!r}: "
            f"{config.broker} takes one URL"
        )
    return config.broker_address
