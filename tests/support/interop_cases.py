"""The interop client cases, each as gRPC's doc/interop-test-descriptions.md describes
it (payload sizes, metadata keys, statuses), for a plain grpc.aio client against any
TestService server. A deadline case runs in a fresh process:

python interop_cases.py grpc|micro|micro-sync ADDRESS timeout_on_sleeping_server

exits 0 when the case passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message
from interop_support import ECHO_INITIAL, ECHO_TRAILING, SPECIAL_MESSAGE, empty_pb2, pb, test_micro

import micro
from micro import errors

M = test_micro.TestServiceMethods
SERVICE = "grpc.testing.TestService"
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # what read() returns at a stream's end
CASES = (
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
)
DEADLINE_CASES = ("timeout_on_sleeping_server",)

# The payloads the document gives, request sizes paired with response sizes.
STREAM_SIZES = (27182, 8, 1828, 45904)
REPLY_SIZES = (31415, 9, 2653, 58979)
METADATA = ((ECHO_INITIAL, "test_initial_metadata_value"), (ECHO_TRAILING, b"\xab\xab\xab"))


def large_request() -> pb.SimpleRequest:
    return pb.SimpleRequest(response_size=314159, payload=pb.Payload(body=bytes(271828)))


def ping(i: int) -> pb.StreamingOutputCallRequest:
    return pb.StreamingOutputCallRequest(
        response_parameters=[pb.ResponseParameters(size=REPLY_SIZES[i])],
        payload=pb.Payload(body=bytes(STREAM_SIZES[i])),
    )


def big_ping() -> pb.StreamingOutputCallRequest:
    return pb.StreamingOutputCallRequest(
        response_parameters=[pb.ResponseParameters(size=314159)],
        payload=pb.Payload(body=bytes(271828)),
    )


def failing(message: str) -> tuple[pb.SimpleRequest, pb.StreamingOutputCallRequest]:
    echo = pb.EchoStatus(code=2, message=message)
    return pb.SimpleRequest(response_status=echo), pb.StreamingOutputCallRequest(
        response_status=echo
    )


class Grpc:
    """The cases for a plain grpc.aio client."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    def _method(self, path: str, request: type[Message], response: type[Message], kind: str) -> Any:
        return getattr(self.channel, kind)(
            path,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    def method(self, m: Any) -> Any:
        return self._method(m.path, m.request, m.response, m.kind)

    async def empty_unary(self) -> None:
        reply = await self.method(M.empty_call)(empty_pb2.Empty())
        assert isinstance(reply, empty_pb2.Empty)

    async def large_unary(self) -> None:
        reply = await self.method(M.unary_call)(large_request())
        assert reply.payload.body == bytes(314159)

    async def client_streaming(self) -> None:
        requests = [
            pb.StreamingInputCallRequest(payload=pb.Payload(body=bytes(n))) for n in STREAM_SIZES
        ]
        reply = await self.method(M.streaming_input_call)(iter(requests))
        assert reply.aggregated_payload_size == 74922

    async def server_streaming(self) -> None:
        request = pb.StreamingOutputCallRequest(
            response_parameters=[pb.ResponseParameters(size=n) for n in REPLY_SIZES]
        )
        sizes = [len(r.payload.body) async for r in self.method(M.streaming_output_call)(request)]
        assert sizes == list(REPLY_SIZES)

    async def ping_pong(self) -> None:
        call = self.method(M.full_duplex_call)()
        for i, size in enumerate(REPLY_SIZES):
            await call.write(ping(i))
            reply = await call.read()
            assert len(reply.payload.body) == size
        await call.done_writing()
        assert await call.read() is EOF
        assert await call.code() == grpc.StatusCode.OK

    async def empty_stream(self) -> None:
        call = self.method(M.full_duplex_call)()
        await call.done_writing()
        assert await call.read() is EOF
        assert await call.code() == grpc.StatusCode.OK

    async def cancel_after_begin(self) -> None:
        call = self.method(M.streaming_input_call)()
        call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED

    async def cancel_after_first_response(self) -> None:
        call = self.method(M.full_duplex_call)()
        await call.write(ping(0))
        reply = await call.read()
        assert len(reply.payload.body) == REPLY_SIZES[0]
        call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED

    async def timeout_on_sleeping_server(self) -> None:
        call = self.method(M.full_duplex_call)(timeout=0.001)
        request = pb.StreamingOutputCallRequest(payload=pb.Payload(body=bytes(27182)))
        with contextlib.suppress(grpc.aio.AioRpcError):  # the deadline may pass first
            await call.write(request)
        assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def custom_metadata(self) -> None:
        initial, trailing = METADATA[0], METADATA[1]
        unary = self.method(M.unary_call)(large_request(), metadata=METADATA)
        assert (await unary).payload.body == bytes(314159)
        assert initial in tuple(await unary.initial_metadata())
        assert trailing in tuple(await unary.trailing_metadata())
        duplex = self.method(M.full_duplex_call)(metadata=METADATA)
        await duplex.write(big_ping())
        await duplex.done_writing()
        assert len((await duplex.read()).payload.body) == 314159
        assert await duplex.read() is EOF
        assert await duplex.code() == grpc.StatusCode.OK
        assert initial in tuple(await duplex.initial_metadata())
        assert trailing in tuple(await duplex.trailing_metadata())

    async def _status(self, message: str) -> None:
        unary_request, stream_request = failing(message)
        unary = self.method(M.unary_call)(unary_request)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await unary
        assert (await unary.code(), await unary.details()) == (grpc.StatusCode.UNKNOWN, message)
        duplex = self.method(M.full_duplex_call)()
        await duplex.write(stream_request)
        await duplex.done_writing()
        assert (await duplex.code(), await duplex.details()) == (grpc.StatusCode.UNKNOWN, message)

    async def status_code_and_message(self) -> None:
        await self._status("test status message")

    async def special_status_message(self) -> None:
        await self._status(SPECIAL_MESSAGE)

    async def unimplemented_method(self) -> None:
        call = self._method(
            "/grpc.testing.TestService/UnimplementedCall",
            empty_pb2.Empty,
            empty_pb2.Empty,
            "unary_unary",
        )(empty_pb2.Empty())
        await asyncio.gather(call, return_exceptions=True)
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED

    async def unimplemented_service(self) -> None:
        call = self._method(
            "/grpc.testing.UnimplementedService/UnimplementedCall",
            empty_pb2.Empty,
            empty_pb2.Empty,
            "unary_unary",
        )(empty_pb2.Empty())
        await asyncio.gather(call, return_exceptions=True)
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED


def sizes(replies: Iterable[pb.StreamingOutputCallResponse]) -> list[int]:
    return [len(r.payload.body) for r in replies]


def stream_request() -> pb.StreamingOutputCallRequest:
    return pb.StreamingOutputCallRequest(
        response_parameters=[pb.ResponseParameters(size=n) for n in REPLY_SIZES]
    )


def input_requests() -> list[pb.StreamingInputCallRequest]:
    return [pb.StreamingInputCallRequest(payload=pb.Payload(body=bytes(n))) for n in STREAM_SIZES]


SLEEPING = pb.StreamingOutputCallRequest(payload=pb.Payload(body=bytes(27182)))


S = TypeVar("S", bound=micro.Stub | micro.SyncStub)
U = TypeVar("U", bound=micro.Stub | micro.SyncStub)


def stubs(
    service: type[S], unimplemented: type[U], client: micro.Client, address: str
) -> tuple[S, U]:
    """Stubs of TestService and UnimplementedService calling ``address`` directly."""
    options = micro.CallOptions(address=address)
    return (
        service(SERVICE, client, options=options),
        unimplemented("grpc.testing.UnimplementedService", client, options=options),
    )


class Micro:
    """The cases for micro's async client (a direct address: no registry)."""

    def __init__(self, client: micro.Client, address: str) -> None:
        self.stub, self.unimplemented = stubs(
            test_micro.TestServiceClient, test_micro.UnimplementedServiceClient, client, address
        )
        self.calls = test_micro.TestServiceCalls(
            SERVICE, client, options=micro.CallOptions(address=address)
        )

    async def empty_unary(self) -> None:
        assert isinstance(await self.stub.empty_call(empty_pb2.Empty()), empty_pb2.Empty)

    async def large_unary(self) -> None:
        reply = await self.stub.unary_call(large_request())
        assert reply.payload.body == bytes(314159)

    async def client_streaming(self) -> None:
        reply = await self.stub.streaming_input_call(input_requests())
        assert reply.aggregated_payload_size == 74922

    async def server_streaming(self) -> None:
        got = [r async for r in self.stub.streaming_output_call(stream_request())]
        assert sizes(got) == list(REPLY_SIZES)

    async def ping_pong(self) -> None:
        call = self.calls.full_duplex_call()
        for i, size in enumerate(REPLY_SIZES):
            await call.write(ping(i))
            reply = await call.read()
            assert reply is not None
            assert len(reply.payload.body) == size
        await call.done_writing()
        assert await call.read() is None
        assert await call.code() == grpc.StatusCode.OK

    async def empty_stream(self) -> None:
        assert [r async for r in self.stub.full_duplex_call(())] == []

    async def cancel_after_begin(self) -> None:
        call = self.calls.streaming_input_call()
        assert call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED

    async def cancel_after_first_response(self) -> None:
        call = self.calls.full_duplex_call()
        await call.write(ping(0))
        reply = await call.read()
        assert reply is not None
        assert len(reply.payload.body) == REPLY_SIZES[0]
        assert call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED

    async def custom_metadata(self) -> None:
        unary = self.calls.unary_call(large_request(), metadata=METADATA)
        assert (await unary).payload.body == bytes(314159)
        duplex = self.calls.full_duplex_call(metadata=METADATA)
        await duplex.write(big_ping())
        await duplex.done_writing()
        replies = [r async for r in duplex]
        assert sizes(replies) == [314159]
        for call in (unary, duplex):
            assert await call.code() == grpc.StatusCode.OK
            assert METADATA[0] in await call.initial_metadata()
            assert METADATA[1] in await call.trailing_metadata()

    async def timeout_on_sleeping_server(self) -> None:
        async def requests() -> AsyncIterator[pb.StreamingOutputCallRequest]:
            yield SLEEPING
            await asyncio.Event().wait()  # never half-closes: the client waits

        with pytest.raises(errors.DeadlineExceeded):
            await _drain(self.stub.full_duplex_call(requests(), timeout=0.001))

    async def _status(self, message: str) -> None:
        unary_request, stream_request = failing(message)
        with pytest.raises(errors.Unknown) as unary:
            await self.stub.unary_call(unary_request)
        with pytest.raises(errors.Unknown) as duplex:
            await _drain(self.stub.full_duplex_call([stream_request]))
        assert unary.value.message == duplex.value.message == message

    async def status_code_and_message(self) -> None:
        await self._status("test status message")

    async def special_status_message(self) -> None:
        await self._status(SPECIAL_MESSAGE)

    async def unimplemented_method(self) -> None:
        with pytest.raises(errors.Unimplemented):
            await self.stub.unimplemented_call(empty_pb2.Empty())

    async def unimplemented_service(self) -> None:
        with pytest.raises(errors.Unimplemented):
            await self.unimplemented.unimplemented_call(empty_pb2.Empty())


async def _drain(replies: AsyncIterator[Any]) -> None:
    async for _ in replies:
        pass


class MicroSync:
    """The cases for micro's blocking client (a direct address: no registry)."""

    def __init__(self, client: micro.Client, address: str) -> None:
        self.stub, self.unimplemented = stubs(
            test_micro.TestServiceSyncClient,
            test_micro.UnimplementedServiceSyncClient,
            client,
            address,
        )
        self.calls = test_micro.TestServiceSyncCalls(
            SERVICE, client, options=micro.CallOptions(address=address)
        )

    def empty_unary(self) -> None:
        assert isinstance(self.stub.empty_call(empty_pb2.Empty()), empty_pb2.Empty)

    def large_unary(self) -> None:
        assert self.stub.unary_call(large_request()).payload.body == bytes(314159)

    def client_streaming(self) -> None:
        reply = self.stub.streaming_input_call(input_requests())
        assert reply.aggregated_payload_size == 74922

    def server_streaming(self) -> None:
        assert sizes(self.stub.streaming_output_call(stream_request())) == list(REPLY_SIZES)

    def ping_pong(self) -> None:
        call = self.calls.full_duplex_call()
        for i, size in enumerate(REPLY_SIZES):
            call.write(ping(i))
            reply = call.read()
            assert reply is not None
            assert len(reply.payload.body) == size
        call.done_writing()
        assert call.read() is None
        assert call.code() == grpc.StatusCode.OK

    def empty_stream(self) -> None:
        assert list(self.stub.full_duplex_call(())) == []

    def cancel_after_begin(self) -> None:
        call = self.calls.streaming_input_call()
        assert call.cancel()
        assert call.code() == grpc.StatusCode.CANCELLED
        with pytest.raises(errors.Cancelled):
            call.result()

    def cancel_after_first_response(self) -> None:
        call = self.calls.full_duplex_call()
        call.write(ping(0))
        reply = call.read()
        assert reply is not None
        assert len(reply.payload.body) == REPLY_SIZES[0]
        assert call.cancel()
        assert call.code() == grpc.StatusCode.CANCELLED

    def custom_metadata(self) -> None:
        unary = self.calls.unary_call(large_request(), metadata=METADATA)
        assert unary.result().payload.body == bytes(314159)
        duplex = self.calls.full_duplex_call(metadata=METADATA)
        duplex.write(big_ping())
        duplex.done_writing()
        assert sizes(duplex) == [314159]
        for call in (unary, duplex):
            assert call.code() == grpc.StatusCode.OK
            assert METADATA[0] in call.initial_metadata()
            assert METADATA[1] in call.trailing_metadata()

    def timeout_on_sleeping_server(self) -> None:
        ended = threading.Event()

        def requests() -> Iterator[pb.StreamingOutputCallRequest]:
            yield SLEEPING
            ended.wait()  # never half-closes while the call lasts: the client waits

        try:
            with pytest.raises(errors.DeadlineExceeded):
                list(self.stub.full_duplex_call(requests(), timeout=0.001))
        finally:
            ended.set()

    def _status(self, message: str) -> None:
        unary_request, stream_request = failing(message)
        with pytest.raises(errors.Unknown) as unary:
            self.stub.unary_call(unary_request)
        with pytest.raises(errors.Unknown) as duplex:
            list(self.stub.full_duplex_call([stream_request]))
        assert unary.value.message == duplex.value.message == message

    def status_code_and_message(self) -> None:
        self._status("test status message")

    def special_status_message(self) -> None:
        self._status(SPECIAL_MESSAGE)

    def unimplemented_method(self) -> None:
        with pytest.raises(errors.Unimplemented):
            self.stub.unimplemented_call(empty_pb2.Empty())

    def unimplemented_service(self) -> None:
        with pytest.raises(errors.Unimplemented):
            self.unimplemented.unimplemented_call(empty_pb2.Empty())


def implemented(cases: type) -> list[str]:
    """The cases a client class runs, in the suite's order."""
    return [c for c in CASES if hasattr(cases, c)]


async def run_grpc(address: str, case: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await getattr(Grpc(channel), case)()


async def run_micro(address: str, case: str) -> None:
    async with micro.Client() as client:
        await getattr(Micro(client, address), case)()


async def run_micro_sync(address: str, case: str) -> None:
    def run() -> None:
        with micro.Client() as client:
            getattr(MicroSync(client, address), case)()

    await asyncio.to_thread(run)


RUNNERS: dict[str, Callable[[str, str], Coroutine[Any, Any, None]]] = {
    "grpc": run_grpc,
    "micro": run_micro,
    "micro-sync": run_micro_sync,
}


def main() -> None:
    kind, address, case = sys.argv[1:]
    asyncio.run(RUNNERS[kind](address, case))
    print(f"{kind} {case}: passed")


if __name__ == "__main__":
    main()
