"""Backends by name, for test processes that get theirs on the command line."""

from __future__ import annotations

import importlib
from typing import Any

from micro.broker import Broker

# name -> (module, class, constructor options); the address is the first argument
BACKENDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "nats": ("micro.broker.nats", "NatsBroker", {}),
    "jetstream": ("micro.broker.nats", "NatsBroker", {"jetstream": True}),
    "redis": ("micro.broker.redis", "RedisBroker", {}),
    "rabbitmq": ("micro.broker.rabbitmq", "RabbitBroker", {}),
}


def make_broker(name: str, address: str, **options: Any) -> Broker:
    module, cls, defaults = BACKENDS[name]
    kind = getattr(importlib.import_module(module), cls)
    broker: Broker = kind(address, **{**defaults, **options})
    return broker
