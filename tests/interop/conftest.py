"""Interop tests: gRPC's interop cases between micro and plain grpcio, each way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from interop_support import MicroTestService, grpc_server, stop

import micro


@pytest.fixture
async def served() -> AsyncIterator[str]:
    """The address of a micro server of the interop TestService."""
    server = micro.Server("127.0.0.1:0")
    server.add(MicroTestService())
    yield await server.start()
    await server.stop(grace=0)


@pytest.fixture(scope="module")
def plain() -> Iterator[str]:
    """The address of a plain grpcio server of the interop TestService."""
    server, address = grpc_server()
    yield address
    stop(server)
