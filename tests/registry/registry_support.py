"""Helpers shared by the registry tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from micro.registry import Endpoint, Event, EventType, Node, Service


def service(
    name: str,
    *nodes: str,
    version: str = "1.0",
    metadata: Mapping[str, str] | None = None,
    node_metadata: Mapping[str, str] | None = None,
) -> Service:
    """``name`` at ``version`` with the given node ids, each on its own port."""
    return Service(
        name,
        version,
        metadata or {"team": "core"},
        (
            Endpoint("Greeter.SayHello", "greeter.v1.HelloRequest", "greeter.v1.HelloReply"),
            Endpoint("Greeter.Chat", "greeter.v1.ChatRequest", "greeter.v1.ChatReply", {"k": "s"}),
        ),
        tuple(
            Node(n, f"127.0.0.1:{50000 + i}", node_metadata or {"zone": "a"})
            for i, n in enumerate(nodes)
        ),
    )


async def next_event(events: AsyncIterator[Event], timeout: float) -> Event:
    return await asyncio.wait_for(anext(events), timeout)


def nodes_by_version(services: list[Service]) -> dict[str, set[str]]:
    return {s.version: {n.id for n in s.nodes} for s in services}


def summary(event: Event) -> tuple[EventType, str, tuple[str, ...]]:
    return event.type, event.service.name, tuple(n.id for n in event.service.nodes)
