"""Service discovery: the ``Registry`` protocol, its data model and backends.

``MemoryRegistry`` (tests), ``MdnsRegistry`` (zero-setup default) and the caching
wrapper live here; backends with their own client library are imported by full path
(``micro.registry.etcd``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from micro.registry.base import (
    Endpoint,
    Event,
    EventType,
    Node,
    ReadOnly,
    Registry,
    RegistryError,
    Service,
)
from micro.registry.cache import CachingRegistry
from micro.registry.memory import MemoryRegistry

if TYPE_CHECKING:
    from micro.config import Config
    from micro.registry.mdns import MdnsRegistry

__all__ = [
    "CachingRegistry",
    "Endpoint",
    "Event",
    "EventType",
    "MdnsRegistry",
    "MemoryRegistry",
    "Node",
    "ReadOnly",
    "Registry",
    "RegistryError",
    "Service",
    "from_config",
]


def from_config(config: Config) -> Registry:
    """The backend ``MICRO_REGISTRY`` names (``config.registry``)."""
    if config.registry == "memory":
        from micro.registry.memory import shared

        return shared()
    if config.registry == "nats":
        from micro.registry.nats import NatsRegistry

        return NatsRegistry(config.registry_address or ("nats://127.0.0.1:4222",))
    if config.registry == "etcd":
        from micro.registry.etcd import EtcdRegistry

        return EtcdRegistry(
            config.registry_address or ("127.0.0.1:2379",), lost_data_grace=config.register_ttl
        )
    if config.registry == "dns":
        from micro.registry.dns import DnsRegistry

        nameservers = config.registry_address or None
        return DnsRegistry(domain=config.registry_domain, nameservers=nameservers)
    from micro.registry.mdns import MdnsRegistry

    registry: Registry = MdnsRegistry(interfaces=config.mdns_interfaces)
    return registry


def __getattr__(name: str) -> Any:
    # zeroconf is imported only by those who use mDNS.
    if name == "MdnsRegistry":
        from micro.registry.mdns import MdnsRegistry

        return MdnsRegistry
    raise AttributeError(name)
