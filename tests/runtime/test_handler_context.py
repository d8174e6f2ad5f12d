"""What a handler says besides its reply, and knows besides its request, through its
``Context``: response headers and trailers (also with an error), every value of a
repeated key, cancellation (flag and callback, ``def`` and ``async def``), the
caller's address, and compression (counted on the wire)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import echo_micro
import echo_pb2
import grpc
import grpc.aio
import pytest
from relay import Relay

import micro
from micro import errors

Req = echo_pb2.EchoRequest
Reply = echo_pb2.EchoReply
M = echo_micro.EchoMethods
HEADERS = (("x-head", "h1"), ("x-head", "h2"), ("x-head-bin", b"\x00\x01"))
TRAILERS = (("x-tail", "t"), ("x-tail-bin", b"\xff"))
BIG = 300_000  # bytes of one repeated letter: gzip makes them a few hundred


class Talking(echo_micro.EchoHandler):
    """Get (``async def``) and Put (``def``) set headers and trailers, and fail when
    asked; Watch streams them around three replies. HOLD waits for ``release``;
    ``big`` replies with BIG bytes, compressed when the text says so."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self.cancel_seen = threading.Event()
        self.finished = threading.Event()  # a held call has recorded ``cancelled_flag``
        self.cancelled_flag: bool | None = None

    def _talk(self, request: Req, ctx: micro.Context) -> Reply:
        ctx.set_initial_metadata(HEADERS)
        ctx.set_trailing_metadata(TRAILERS)
        if request.fail:
            raise errors.for_code(grpc.StatusCode[request.fail], "failed as asked")
        values = ",".join(str(v) for v in ctx.metadata_all("x-many"))
        return Reply(text=values, node=ctx.peer.address)

    async def get(self, request: Req, ctx: micro.Context) -> Reply:
        if request.text == "big":
            if request.hops:
                ctx.set_compression(grpc.Compression.Gzip)
            return Reply(text="a" * BIG)
        if request.text == "hold":
            ctx.on_cancel(self.cancel_seen.set)
            self.holding.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled_flag = ctx.cancelled
                self.finished.set()
        return self._talk(request, ctx)

    def put(self, request: Req, ctx: micro.Context) -> Reply:
        if request.text == "hold":
            ctx.on_cancel(self.cancel_seen.set)
            self.holding.set()
            self.release.wait(60)  # released by the test; 60 s bounds a broken test
            self.cancelled_flag = ctx.cancelled
            self.finished.set()
            return Reply()
        return self._talk(request, ctx)

    async def watch(self, request: Req, ctx: micro.Context) -> AsyncIterator[Reply]:
        ctx.set_initial_metadata(HEADERS)
        for i in range(int(request.sleep)):
            yield Reply(text=str(i))
        ctx.set_trailing_metadata(TRAILERS)


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Talking]]:
    handler = Talking()
    server = micro.Server("127.0.0.1:0")
    server.add(handler)
    address = await server.start()
    yield address, handler
    handler.release.set()
    await server.stop(grace=0)


@pytest.fixture
async def channel(served: tuple[str, Talking]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(served[0]) as channel:
        yield channel


def method(
    channel: grpc.aio.Channel, m: micro.Method[Req, Reply]
) -> grpc.aio.UnaryUnaryMultiCallable[Req, Reply]:
    """A plain grpc caller of ``m``: what it sees is what the server sent."""
    return channel.unary_unary(
        m.path, request_serializer=m.serialize, response_deserializer=m.deserialize_response
    )


@pytest.mark.parametrize("name", ["get", "put"])  # async def, def
async def test_headers_trailers_and_every_value_of_a_key(
    channel: grpc.aio.Channel, name: str
) -> None:
    call = method(channel, getattr(M, name))(Req(), metadata=(("x-many", "1"), ("x-many", "2")))
    assert (await call).text == "1,2"
    assert tuple(await call.initial_metadata()) == HEADERS
    assert tuple(await call.trailing_metadata()) == TRAILERS


@pytest.mark.parametrize("count", [3, 0])
async def test_a_stream_sends_its_headers_with_or_without_replies(
    served: tuple[str, Talking], count: int
) -> None:
    # Read by a blocking grpc client, which waits for the headers themselves: grpc.aio's
    # may report none for a stream that ends without a reply, when it handles the status
    # before the headers (its _AioCall._set_status fills in empty headers, and drops the
    # real ones that arrive next; seen on Python 3.10 under load).
    def watch() -> tuple[list[str], tuple[object, ...], tuple[object, ...]]:
        with grpc.insecure_channel(served[0]) as channel:
            call = channel.unary_stream(
                M.watch.path,
                request_serializer=M.watch.serialize,
                response_deserializer=M.watch.deserialize_response,
            )(Req(sleep=count))
            texts = [r.text for r in call]
            return texts, tuple(call.initial_metadata()), tuple(call.trailing_metadata())

    texts, headers, trailers = await asyncio.to_thread(watch)
    assert texts == [str(i) for i in range(count)]
    assert headers == HEADERS
    assert trailers == TRAILERS


@pytest.mark.parametrize("name", ["get", "put"])
async def test_headers_and_trailers_go_with_an_error_to_micro_callers(
    served: tuple[str, Talking], name: str
) -> None:
    async with micro.Client() as client:
        stub = echo_micro.EchoClient("echo", client, options=micro.CallOptions(address=served[0]))
        with pytest.raises(errors.NotFound) as caught:
            await getattr(stub, name)(Req(fail="NOT_FOUND"))
    assert caught.value.message == "failed as asked"
    assert caught.value.initial_metadata == HEADERS
    assert caught.value.trailing_metadata == TRAILERS


async def test_the_caller_address(served: tuple[str, Talking], channel: grpc.aio.Channel) -> None:
    reply = await method(channel, M.get)(Req())
    host, port = reply.node.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert 0 < int(port) != int(served[0].rsplit(":", 1)[1])


@pytest.mark.parametrize("name", ["get", "put"])  # async def, def
async def test_a_handler_knows_its_caller_cancelled(
    served: tuple[str, Talking], channel: grpc.aio.Channel, name: str
) -> None:
    handler = served[1]
    call = method(channel, getattr(M, name))(Req(text="hold"))
    # The handler signals it is waiting; 30 s bounds a start on a loaded machine.
    assert await asyncio.to_thread(handler.holding.wait, 30)
    call.cancel()
    assert await asyncio.to_thread(handler.cancel_seen.wait, 30)  # the on_cancel callback
    handler.release.set()
    assert await asyncio.to_thread(handler.finished.wait, 30)
    # A def handler's thread reads the flag; an async one learnt it as CancelledError.
    assert handler.cancelled_flag is (name == "put")


@pytest.mark.parametrize(
    ("server_default", "per_call", "compressed"),
    [(None, False, False), (None, True, True), (grpc.Compression.Gzip, False, True)],
)
async def test_compression_per_call_or_server_default(
    server_default: grpc.Compression | None, per_call: bool, compressed: bool
) -> None:
    server = micro.Server("127.0.0.1:0", compression=server_default)
    server.add(Talking())
    address = await server.start()
    try:
        async with Relay(address) as relay, grpc.aio.insecure_channel(relay.address) as channel:
            reply = await method(channel, M.get)(Req(text="big", hops=["z"] if per_call else []))
    finally:
        await server.stop(grace=0)
    assert len(reply.text) == BIG
    assert (relay.down < BIG // 10) is compressed, relay.down
