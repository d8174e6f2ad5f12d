"""Registry tests: a unique service name per test (announcements from other tests or
runs cannot interfere), and mDNS registries that are always closed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from registry_support import loopback_multicast

from micro.registry import MdnsRegistry


@pytest.fixture
def name() -> str:
    return f"svc-{uuid.uuid4().hex[:12]}"


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
