"""Every status a server ends a call with reaches micro's clients as the typed error of
that code, with its message, from a micro server and from a plain grpcio one; and
``errors.for_code`` is exact for all 16 codes besides OK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from interop_support import pb, test_micro

import micro
from micro import errors

CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]


def test_sixteen_codes_each_have_their_class() -> None:
    classes = {c: type(errors.for_code(c, "m")) for c in CODES}
    assert len(set(classes.values())) == 16
    assert all(classes[c].code is c for c in CODES)


def failing(code: grpc.StatusCode) -> pb.SimpleRequest:
    return pb.SimpleRequest(
        response_status=pb.EchoStatus(code=code.value[0], message=f"ends {code.name}")
    )


@pytest.mark.parametrize("server", ["micro", "grpcio"])
async def test_async_client_gets_each_code(
    server: str, served: str, plain: str, client: micro.Client
) -> None:
    options = micro.CallOptions(address=served if server == "micro" else plain)
    stub = test_micro.TestServiceClient("interop", client, options=options)
    got = {}
    for code in CODES:
        with pytest.raises(errors.Error) as caught:
            await stub.unary_call(failing(code))
        got[code] = (caught.value.code, caught.value.message)
    assert got == {c: (c, f"ends {c.name}") for c in CODES}


@pytest.mark.parametrize("server", ["micro", "grpcio"])
async def test_blocking_client_gets_each_code(server: str, served: str, plain: str) -> None:
    options = micro.CallOptions(address=served if server == "micro" else plain)

    def run() -> dict[grpc.StatusCode, tuple[grpc.StatusCode, str]]:
        got: dict[grpc.StatusCode, tuple[grpc.StatusCode, str]] = {}
        with micro.Client() as client:
            stub = test_micro.TestServiceSyncClient("interop", client, options=options)
            for code in CODES:
                with pytest.raises(errors.Error) as caught:
                    stub.unary_call(failing(code))
                got[code] = (caught.value.code, caught.value.message)
        return got

    assert await asyncio.to_thread(run) == {c: (c, f"ends {c.name}") for c in CODES}


@pytest.fixture
async def client() -> AsyncIterator[micro.Client]:
    async with micro.Client() as c:
        yield c
