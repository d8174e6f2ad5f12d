"""Service discovery: the ``Registry`` protocol, its data model and backends.

``MemoryRegistry`` (tests) and the caching wrapper live here. The other backends are
imported on first use, so zeroconf, aetcd and nats-py load only for those who use
them::

    from micro.registry import EtcdRegistry  # without aetcd: install `micro-grpc[etcd]`

``EtcdRegistry`` and ``NatsRegistry`` stay out of ``__all__``: a star import would
need every extra installed.
"""

from __future__ import annotations

import importlib
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
    from micro.registry.dns import DnsRegistry
    from micro.registry.etcd import EtcdRegistry as EtcdRegistry
    from micro.registry.mdns import MdnsRegistry
    from micro.registry.nats import NatsRegistry as NatsRegistry

# The backends __getattr__ imports on first use, by the module that holds each.
_BACKENDS = {
    "DnsRegistry": "micro.registry.dns",
    "EtcdRegistry": "micro.registry.etcd",
    "MdnsRegistry": "micro.registry.mdns",
    "NatsRegistry": "micro.registry.nats",
}

__all__ = [
    "CachingRegistry",
    "DnsRegistry",
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
            config.registry_address or ("127.0.0.1:2379",),
            username=config.registry_username,
            password=config.registry_password,
            ca_file=config.registry_tls_ca,
            cert_file=config.registry_tls_cert,
            key_file=config.registry_tls_key,
            lost_data_grace=config.register_ttl,
        )
    if config.registry == "dns":
        from micro.registry.dns import DnsRegistry

        nameservers = config.registry_address or None
        return DnsRegistry(domain=config.registry_domain, nameservers=nameservers)
    from micro.registry.mdns import MdnsRegistry

    registry: Registry = MdnsRegistry(interfaces=config.mdns_interfaces)
    return registry


def __getattr__(name: str) -> Any:
    module = _BACKENDS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)  # ImportError: names the extra
