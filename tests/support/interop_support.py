"""gRPC's interop suite (grpc doc/interop-test-descriptions.md), both ways round.

Importing this generates tests/interop/protos (grpc.testing's TestService, its
messages and Empty, with gRPC's names and field numbers) as the package
``interop_pb`` under tests/gen/interop, and puts it on the path. Two servers of the
same features, one micro and one plain grpcio, so the same cases run against either:

- ``MicroTestService``: a micro handler, called by plain grpcio clients;
- ``grpc_server(port)``: a plain grpcio server (its own threads), called by micro's
  async and blocking clients.

What both servers share (payloads, echoed metadata, requested statuses) is here once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

HERE = Path(__file__).parent
PROTOS = HERE.parent / "interop" / "protos"
GEN = HERE.parent / "gen" / "interop"
TEMPLATE = HERE.parents[1] / "templates" / "micro_module.py.j2"


def _generate() -> None:
    """Generate the interop protos unless the output is newer than every source and
    the template."""
    out = GEN / "interop_pb" / "grpc" / "testing" / "test_micro.py"
    sources = list(PROTOS.rglob("*.proto"))
    if out.exists() and all(out.stat().st_mtime >= p.stat().st_mtime for p in (*sources, TEMPLATE)):
        return
    subprocess.run(
        [
            sys.executable,
            "-m",
            "micro",
            "gen",
            "-I",
            str(PROTOS),
            "--out",
            str(GEN / "interop_pb"),
            "--package",
            "interop_pb",
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
    )


_generate()
sys.path.insert(0, str(GEN))

from interop_pb.grpc.testing import empty_pb2, test_micro  # noqa: E402
from interop_pb.grpc.testing import messages_pb2 as pb  # noqa: E402

import micro  # noqa: E402
from micro import errors  # noqa: E402

__all__ = [
    "ECHO_INITIAL",
    "ECHO_TRAILING",
    "SPECIAL_MESSAGE",
    "MicroTestService",
    "empty_pb2",
    "grpc_server",
    "pb",
    "test_micro",
]

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"

_Pairs = tuple[tuple[str, str | bytes], ...]


def echoed(metadata: Sequence[tuple[str, str | bytes]]) -> tuple[_Pairs, _Pairs]:
    """(initial, trailing) metadata a server echoes for the caller's metadata."""
    initial = tuple((k, v) for k, v in metadata if k == ECHO_INITIAL)
    trailing = tuple((k, v) for k, v in metadata if k == ECHO_TRAILING)
    return initial, trailing


def status(echo: pb.EchoStatus) -> grpc.StatusCode | None:
    """The status a request asks the server to end the call with, None for none."""
    if not echo.code:
        return None
    return next(c for c in grpc.StatusCode if c.value[0] == echo.code)


def payload(size: int) -> pb.Payload:
    return pb.Payload(body=bytes(size))


def replies(request: pb.StreamingOutputCallRequest) -> Iterator[pb.StreamingOutputCallResponse]:
    """One reply per ResponseParameters (``interval_us`` is not used by the cases run
    here, so not observed)."""
    for params in request.response_parameters:
        yield pb.StreamingOutputCallResponse(payload=payload(params.size))


class MicroTestService(test_micro.TestServiceHandler):
    """The interop server features as a micro handler."""

    async def empty_call(self, request: empty_pb2.Empty, ctx: micro.Context) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    async def unary_call(self, request: pb.SimpleRequest, ctx: micro.Context) -> pb.SimpleResponse:
        self._echo(ctx)
        self._fail_as_asked(request.response_status)
        if request.response_compressed.value:
            ctx.set_compression(grpc.Compression.Gzip)
        return pb.SimpleResponse(payload=payload(request.response_size))

    async def streaming_output_call(
        self, request: pb.StreamingOutputCallRequest, ctx: micro.Context
    ) -> AsyncIterator[pb.StreamingOutputCallResponse]:
        self._fail_as_asked(request.response_status)
        for reply in replies(request):
            yield reply

    async def streaming_input_call(
        self, requests: micro.Requests[pb.StreamingInputCallRequest], ctx: micro.Context
    ) -> pb.StreamingInputCallResponse:
        size = 0
        async for request in requests:
            size += len(request.payload.body)
        return pb.StreamingInputCallResponse(aggregated_payload_size=size)

    async def full_duplex_call(
        self, requests: micro.Requests[pb.StreamingOutputCallRequest], ctx: micro.Context
    ) -> AsyncIterator[pb.StreamingOutputCallResponse]:
        self._echo(ctx)
        async for request in requests:
            self._fail_as_asked(request.response_status)
            for reply in replies(request):
                yield reply

    async def half_duplex_call(
        self, requests: micro.Requests[pb.StreamingOutputCallRequest], ctx: micro.Context
    ) -> AsyncIterator[pb.StreamingOutputCallResponse]:
        received = [request async for request in requests]
        for request in received:
            for reply in replies(request):
                yield reply

    @staticmethod
    def _echo(ctx: micro.Context) -> None:
        initial, trailing = echoed(
            [(k, v) for k in (ECHO_INITIAL, ECHO_TRAILING) for v in ctx.metadata_all(k)]
        )
        if initial:
            ctx.set_initial_metadata(initial)
        if trailing:
            ctx.set_trailing_metadata(trailing)

    @staticmethod
    def _fail_as_asked(echo: pb.EchoStatus) -> None:
        code = status(echo)
        if code is not None:
            raise errors.for_code(code, echo.message)


class _GrpcTestService:
    """The same features as a plain grpcio servicer (sync API, grpc's thread pool)."""

    def empty_call(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> Any:
        return empty_pb2.Empty()

    def unary_call(self, request: pb.SimpleRequest, context: grpc.ServicerContext) -> Any:
        self._echo(context)
        self._fail_as_asked(request.response_status, context)
        return pb.SimpleResponse(payload=payload(request.response_size))

    def streaming_output_call(
        self, request: pb.StreamingOutputCallRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        self._fail_as_asked(request.response_status, context)
        yield from replies(request)

    def streaming_input_call(
        self, requests: Iterator[pb.StreamingInputCallRequest], context: grpc.ServicerContext
    ) -> Any:
        size = sum(len(r.payload.body) for r in requests)
        return pb.StreamingInputCallResponse(aggregated_payload_size=size)

    def full_duplex_call(
        self, requests: Iterator[pb.StreamingOutputCallRequest], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        self._echo(context)
        for request in requests:
            self._fail_as_asked(request.response_status, context)
            yield from replies(request)

    def half_duplex_call(
        self, requests: Iterator[pb.StreamingOutputCallRequest], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        for request in list(requests):
            yield from replies(request)

    @staticmethod
    def _echo(context: grpc.ServicerContext) -> None:
        initial, trailing = echoed(tuple(context.invocation_metadata()))
        if initial:
            context.send_initial_metadata(initial)
        if trailing:
            context.set_trailing_metadata(trailing)

    @staticmethod
    def _fail_as_asked(echo: pb.EchoStatus, context: grpc.ServicerContext) -> None:
        code = status(echo)
        if code is not None:
            context.abort(code, echo.message)


def grpc_server(port: int = 0) -> tuple[grpc.Server, str]:
    """A started plain grpcio server of TestService on loopback, and its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="interop"))
    servicer = _GrpcTestService()
    methods = {}
    for m in test_micro.TestServiceHandler.__service__.methods:
        if m.name != "unimplemented_call":  # as the suite says: no server implements it
            make = getattr(grpc, f"{m.kind}_rpc_method_handler")
            methods[m.path.rsplit("/", 1)[1]] = make(
                getattr(servicer, m.name),
                request_deserializer=m.request.FromString,
                response_serializer=m.response.SerializeToString,
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("grpc.testing.TestService", methods),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, f"127.0.0.1:{bound}"


def stop(server: grpc.Server) -> None:
    server.stop(None).wait()


async def in_fresh_process(client: str, address: str, case: str) -> None:
    """Run one case in a new interpreter, whose first call also connects (so a deadline
    may run out while connecting, not only on the server): fails with its output."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(HERE / "interop_cases.py"), client, address, case],
        capture_output=True,
        text=True,
        timeout=60,  # an interpreter start and one short case, on a loaded machine
    )
    assert done.returncode == 0, done.stdout + done.stderr
