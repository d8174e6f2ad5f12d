"""Registry tests: a unique service name per test (announcements from other tests or
runs cannot interfere), and mDNS registries that are always closed."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from micro.registry import MdnsRegistry


@pytest.fixture
def name() -> str:
    return f"svc-{uuid.uuid4().hex[:12]}"


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


@pytest.fixture
def multicast() -> None:
    """Skips (a failure in CI: mDNS tests are marked ``backend``) without loopback
    multicast."""
    reason = loopback_multicast()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
async def mdns(multicast: None) -> AsyncIterator[Callable[..., MdnsRegistry]]:
    """Opens ``MdnsRegistry`` instances (each its own zeroconf, as separate processes
    would have) and closes them after the test."""
    opened: list[MdnsRegistry] = []

    def open_registry(**options: object) -> MdnsRegistry:
        registry = MdnsRegistry(**options)  # type: ignore[arg-type]
        opened.append(registry)
        return registry

    yield open_registry
    for registry in opened:
        await registry.close()
