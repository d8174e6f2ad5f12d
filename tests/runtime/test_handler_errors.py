"""What a handler raises reaches the caller as a status: bugs as a bare INTERNAL (the
traceback stays in the server's log), typed errors with their code, message and details."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import echo_micro
import echo_pb2
import grpc
import pytest
from google.rpc import error_details_pb2

import micro
from micro import errors
from micro.testing import Harness

Req = echo_pb2.EchoRequest
Reply = echo_pb2.EchoReply

SECRET = "secret detail /path/to/file.py"

BAD_REQUEST = error_details_pb2.BadRequest(
    field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="name", description="must not be empty")
    ]
)
ERROR_INFO = error_details_pb2.ErrorInfo(
    reason="EMPTY_NAME", domain="echo.example.com", metadata={"field": "name"}
)


class Faulty(echo_micro.EchoHandler):
    """Get and Watch fail with a bug when asked (``fail="bug"``); Put raises a typed
    error with rich details."""

    async def get(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> Reply:
        if request.fail == "bug":
            raise RuntimeError(SECRET)
        return Reply(text=request.text)

    async def put(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> Reply:
        raise errors.InvalidArgument("bad name", details=[BAD_REQUEST, ERROR_INFO])

    async def watch(
        self, request: echo_pb2.EchoRequest, ctx: micro.Context
    ) -> AsyncIterator[Reply]:
        for i in range(3):
            yield Reply(text=f"{request.text}{i}")
            if request.fail == "bug":
                raise RuntimeError(SECRET)


@pytest.fixture
async def client(micro_harness: Harness) -> micro.Client:
    await micro_harness.serve("faulty", Faulty())
    return micro_harness.caller


def _server_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "micro.server" and r.levelno >= logging.ERROR]


def _assert_hidden(error: errors.Error, path: str) -> None:
    assert type(error) is errors.Internal
    assert error.code is grpc.StatusCode.INTERNAL
    assert path in error.message
    for leak in (SECRET, "secret", "file.py", "RuntimeError", "Traceback"):
        assert leak not in error.message
        assert leak not in str(error)
    assert error.details == ()


def _assert_logged(caplog: pytest.LogCaptureFixture, path: str) -> None:
    (record,) = _server_errors(caplog)  # logged once: INTERNAL is not retried
    assert path in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "Traceback" in caplog.text
    assert SECRET in caplog.text


async def test_unary_bug_is_internal_and_logged(
    client: micro.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="micro.server")
    echo = echo_micro.EchoClient("faulty", client)
    with pytest.raises(errors.Internal) as raised:
        await echo.get(Req(fail="bug"))
    _assert_hidden(raised.value, "/echo.v1.Echo/Get")
    _assert_logged(caplog, "/echo.v1.Echo/Get")
    assert (await echo.get(Req(text="next"))).text == "next"  # still serving


async def test_stream_bug_after_first_message(
    client: micro.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="micro.server")
    echo = echo_micro.EchoClient("faulty", client)
    received: list[str] = []

    async def read() -> None:
        async for reply in echo.watch(Req(text="x", fail="bug")):
            received.append(reply.text)

    with pytest.raises(errors.Internal) as raised:
        await read()
    assert received == ["x0"]  # the message sent before the bug arrives
    _assert_hidden(raised.value, "/echo.v1.Echo/Watch")
    _assert_logged(caplog, "/echo.v1.Echo/Watch")
    assert [r.text async for r in echo.watch(Req(text="y"))] == ["y0", "y1", "y2"]
    assert (await echo.get(Req(text="next"))).text == "next"


def _assert_rich(error: errors.Error) -> None:
    assert type(error) is errors.InvalidArgument
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "bad name"
    assert len(error.details) == 2
    assert error.detail(error_details_pb2.BadRequest) == BAD_REQUEST
    assert error.detail(error_details_pb2.ErrorInfo) == ERROR_INFO
    assert error.detail(error_details_pb2.RetryInfo) is None


async def test_rich_details_reach_async_client(client: micro.Client) -> None:
    echo = echo_micro.EchoClient("faulty", client)
    with pytest.raises(errors.InvalidArgument) as raised:
        await echo.put(Req())
    _assert_rich(raised.value)


async def test_rich_details_reach_sync_client(client: micro.Client) -> None:
    echo = echo_micro.EchoSyncClient("faulty", client)

    def call() -> errors.Error:
        with pytest.raises(errors.InvalidArgument) as raised:
            echo.put(Req())
        return raised.value

    _assert_rich(await asyncio.to_thread(call))
