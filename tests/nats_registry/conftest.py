"""NATS registry tests: each test gets its own nats-server (see nats_support)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from nats_support import NatsServer, running

from micro.registry.nats import NatsRegistry


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with running(tmp_path) as server:
        yield server


REQUEST_TIMEOUT = 10.0


@pytest.fixture
def name() -> str:
    return f"svc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def nats_registry(
    nats_server: NatsServer,
) -> AsyncIterator[Callable[..., NatsRegistry]]:
    """Opens registries on the test's nats-server and closes them after the test.
    Requests may take up to ``REQUEST_TIMEOUT`` (the default is 2 s): these tests
    are not about that bound, and a loaded machine can stretch a request."""
    opened: list[NatsRegistry] = []

    def open_registry(**options: object) -> NatsRegistry:
        options.setdefault("request_timeout", REQUEST_TIMEOUT)
        registry = NatsRegistry([nats_server.url], **options)  # type: ignore[arg-type]
        opened.append(registry)
        return registry

    yield open_registry
    for registry in opened:
        await registry.close()
