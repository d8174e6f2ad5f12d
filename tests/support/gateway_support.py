"""The gateway tests' Library service (library.proto, generated on import into
tests/gen/gateway, which this puts on the path) and a gateway served by uvicorn on a
loopback socket, both on one event loop in a thread of their own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import google.api  # type: ignore[import-untyped]

HERE = Path(__file__).parent
GEN = HERE.parent / "gen" / "gateway"
GOOGLEAPIS = Path(google.api.__path__[0]).parent.parent  # site-packages: google/api/*.proto
T = TypeVar("T")


DESCRIPTOR_SET = GEN / "library.binpb"  # with source info: the comments for OpenAPI


def _generate() -> None:
    """Generate library.proto, and its descriptor set, unless the output is newer
    (collection imports it)."""
    source_time = (HERE / "library.proto").stat().st_mtime
    outs = (GEN / "library_micro.py", DESCRIPTOR_SET)
    if all(out.exists() and out.stat().st_mtime >= source_time for out in outs):
        return
    GEN.mkdir(parents=True, exist_ok=True)
    includes = ("-I", str(HERE), "-I", str(GOOGLEAPIS))
    source = str(HERE / "library.proto")
    subprocess.run(
        [sys.executable, "-m", "micro", "gen", *includes, "--out", str(GEN), source],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *(sys.executable, "-m", "grpc_tools.protoc", *includes, "--include_source_info"),
            *(f"--descriptor_set_out={DESCRIPTOR_SET}", source),
        ],
        check=True,
        capture_output=True,
    )


_generate()
sys.path.insert(0, str(GEN))

import grpc  # noqa: E402
import library_micro  # noqa: E402
from google.protobuf import any_pb2, empty_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from library_pb2 import (  # noqa: E402
    Book,
    Caller,
    CreateBookRequest,
    FailRequest,
    GetBookRequest,
    ListBooksReply,
    ListBooksRequest,
    PrintRequest,
    Shelf,
)

import micro  # noqa: E402
from micro import errors  # noqa: E402
from micro.gateway import Gateway  # noqa: E402
from micro.gateway.serving import Server, bind  # noqa: E402
from micro.registry import MemoryRegistry  # noqa: E402

CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)


class Library(library_micro.LibraryHandler):
    """Answers from what each request says; ``printing`` lets ``Print`` go on."""

    def __init__(self) -> None:
        self.printing = asyncio.Event()

    async def get_book(self, request: GetBookRequest, ctx: micro.Context) -> Book:
        ctx.set_initial_metadata([("x-shelf", "fiction")])
        ctx.set_trailing_metadata([("x-served-by", "library"), ("grpc-internal", "no")])
        return Book(id=request.name.rpartition("/")[2], title=f"Title of {request.name}")

    async def list_books(self, request: ListBooksRequest, ctx: micro.Context) -> ListBooksReply:
        asked = (
            f"shelf={request.shelf} page_size={request.page_size} "
            f"tags={','.join(request.tags)} include_hidden={request.include_hidden}"
        )
        return ListBooksReply(books=[Book(id="1", pages=2**40)], asked=asked)

    async def create_book(self, request: CreateBookRequest, ctx: micro.Context) -> Book:
        book = Book()
        book.CopyFrom(request.book)
        book.tags.append(f"shelf:{request.shelf}")
        return book

    async def get_title(self, request: GetBookRequest, ctx: micro.Context) -> Book:
        return Book(title=f"Title of {request.name}")

    async def fail(self, request: FailRequest, ctx: micro.Context) -> empty_pb2.Empty:
        detail = error_details_pb2.ErrorInfo(reason="ASKED", domain="library.test")
        ctx.set_initial_metadata([("x-shelf", "fiction")])
        ctx.set_trailing_metadata([("x-failed-by", "library"), ("grpc-internal", "no")])
        packed = any_pb2.Any()
        packed.Pack(detail)
        raise errors.for_code(grpc.StatusCode[request.code], request.message, [packed])

    async def whoami(self, request: empty_pb2.Empty, ctx: micro.Context) -> Caller:
        shown = {k: v for k, v in ctx.metadata.items() if isinstance(v, str)}
        return Caller(metadata=shown, deadline=ctx.time_remaining() or 0.0)

    async def print(self, request: PrintRequest, ctx: micro.Context) -> AsyncIterator[Book]:
        ctx.set_initial_metadata([("x-press", "p1")])
        ctx.set_trailing_metadata([("x-printed", str(request.count))])
        for number in range(1, request.count + 1):
            if number == request.fail_after + 1 and request.fail_after:
                await self.printing.wait()  # the test has read what came before
                raise errors.Aborted(f"the press broke at book {number}")
            yield Book(id=str(number))

    async def collect(self, requests: micro.Requests[Book], ctx: micro.Context) -> Shelf:
        return Shelf(books=[book async for book in requests])

    async def shout(
        self, requests: micro.Requests[Book], ctx: micro.Context
    ) -> AsyncIterator[Book]:
        async for book in requests:
            yield Book(id=book.id, title=book.title.upper())

    async def old(self, request: GetBookRequest, ctx: micro.Context) -> Book:
        return Book(id=request.name)


class Stack:
    """A Library service and a gateway in front of it, on a loop in its own thread:
    ``url`` is the gateway's. ``run`` runs a coroutine there (the handler's events).
    ``service``: the service's config; the rest are the gateway's options."""

    def __init__(
        self,
        name: str = "library",
        *,
        service: micro.Config = CONFIG,
        **gateway: Any,
    ) -> None:
        self.name = name
        self._config = service
        self.library = Library()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway-stack")
        self._thread.start()
        self._sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._gateway_options = gateway
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """``coro``'s result, run on the stack's loop; 60 s: a loaded start."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    async def _start(self) -> None:
        self.registry = MemoryRegistry()
        self.service = micro.Service(self.name, registry=self.registry, config=self._config)
        self.service.handle(self.library)
        await self.service.start()
        self.client = micro.Client(self.registry, config=CONFIG)
        self.gateway = Gateway(self.client, **self._gateway_options)
        self.server = Server(self.gateway)
        self._serving = asyncio.ensure_future(self.server.serve(sockets=[self._sock]))
        await asyncio.wait(
            [self._serving, asyncio.ensure_future(self.server.ready.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._serving.done():
            self._serving.result()  # why it did not start

    async def _stop(self) -> None:
        self.server.stop()
        await self._serving
        await self.client.close()
        await self.service.stop(grace=0)

    def close(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
            self._sock.close()
