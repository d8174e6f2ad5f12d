"""Helpers shared by the registry tests."""

from __future__ import annotations

import asyncio
import socket
import uuid
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


def loopback_multicast() -> str | None:
    """Why multicast over 127.0.0.1 does not work here, or ``None`` when it does.

    Linux delivers it even though ``lo`` lacks the MULTICAST flag, as long as the
    sender picks the interface (IP_MULTICAST_IF) and the receiver joins on it, which
    is what zeroconf does; a container without loopback multicast fails this probe."""
    group = "224.0.0.251"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        try:
            rx.bind(("", 0))
            membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            rx.settimeout(2)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            probe = uuid.uuid4().bytes
            tx.sendto(probe, (group, rx.getsockname()[1]))
            while rx.recv(64) != probe:
                pass
        except OSError as e:
            return f"multicast over 127.0.0.1 does not work here: {e}"
    return None
