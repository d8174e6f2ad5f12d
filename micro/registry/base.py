"""The registry model and protocol (Go Micro's, in Python).

A ``Service`` is one name at one version; its ``nodes`` are the running instances.
``get_service`` returns one ``Service`` per version seen, each with its live nodes.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

RETRY_WATCH = (0.05, 0.1, 0.25, 0.5, 1.0)  # seconds between reconnects of a broken watch


class RegistryError(Exception):
    """The registry backend failed or is unreachable; the message names it."""


class ReadOnly(RegistryError):
    """This registry only discovers: instances are published by something else (DNS
    records of a Kubernetes headless service), so a service runs without registering."""


@dataclass(frozen=True)
class Node:
    """One running instance: ``address`` is ``host:port`` of its gRPC server."""

    id: str
    address: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One RPC method a service serves: ``Greeter.SayHello`` and its message types."""

    name: str
    request: str
    response: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    name: str
    version: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[Endpoint, ...] = ()
    nodes: tuple[Node, ...] = ()

    def with_nodes(self, nodes: tuple[Node, ...]) -> Service:
        return replace(self, nodes=nodes)


def group(entries: Iterable[Service]) -> list[Service]:
    """One ``Service`` per (name, version), holding the nodes of all its entries."""
    grouped: dict[tuple[str, str], Service] = {}
    for s in entries:
        key = (s.name, s.version)
        if key in grouped:
            grouped[key] = grouped[key].with_nodes((*grouped[key].nodes, *s.nodes))
        else:
            grouped[key] = s
    return list(grouped.values())


class EventType(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    """A change to one node: ``service`` carries that single node."""

    type: EventType
    service: Service


@runtime_checkable
class Registry(Protocol):
    """What every backend provides. Methods raise ``RegistryError`` when the backend
    cannot be reached."""

    async def register(self, service: Service, ttl: float) -> None:
        """Add or refresh ``service.nodes``; they expire ``ttl`` seconds after the
        last call unless registered again."""

    async def deregister(self, service: Service) -> None:
        """Remove ``service.nodes`` now."""

    async def get_service(self, name: str) -> list[Service]:
        """Every version of ``name`` with its live nodes; ``[]`` when none."""

    async def list_services(self) -> list[Service]:
        """Every service (nodes may be omitted)."""

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        """Changes as they happen, for one service or all; stops when closed."""

    async def close(self) -> None:
        """Release connections; registered nodes are left to expire."""
