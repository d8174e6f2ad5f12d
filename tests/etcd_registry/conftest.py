"""etcd registry tests: each test gets its own etcd (see etcd_support)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from etcd_support import EtcdServer, running

from micro.registry.etcd import EtcdRegistry


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    with running(tmp_path) as server:
        yield server


REQUEST_TIMEOUT = 10.0


@pytest.fixture
def name() -> str:
    return f"svc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def etcd_registry(etcd_server: EtcdServer) -> AsyncIterator[Callable[..., EtcdRegistry]]:
    """Opens registries on the test's etcd (each as a separate process would) and
    closes them after the test. Requests may take up to ``REQUEST_TIMEOUT``: a
    fresh etcd on a loaded machine has been seen to take more than the default
    2 s, and these tests are not about that bound."""
    opened: list[EtcdRegistry] = []

    def open_registry(**options: object) -> EtcdRegistry:
        options.setdefault("timeout", REQUEST_TIMEOUT)
        registry = EtcdRegistry([etcd_server.endpoint], **options)  # type: ignore[arg-type]
        opened.append(registry)
        return registry

    yield open_registry
    for registry in opened:
        await registry.close()
