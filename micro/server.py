"""Serving handlers on grpc.aio: the ``Server``, method adapters, error mapping.

A generated ``<Svc>Handler`` subclass becomes one grpc method handler per method.
Handlers may be ``async def`` (run on the event loop) or ``def`` (run in a worker
thread, so blocking code does not stall other calls). ``mount`` puts handlers on a
plain ``grpc.aio.Server``; ``Server`` adds health, reflection, size limits and a
graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from micro import errors
from micro.config import MAX_MESSAGE_SIZE
from micro.context import Context, inbound
from micro.method import Method, ServiceDescriptor
from micro.middleware import Middleware, Outcome, ServerCall
from micro.middleware.base import SUCCEEDED, Chain, Endings, begin, chain, end, failed
from micro.tls import Tls
from micro.workers import Workers

log = logging.getLogger("micro.server")

_GrpcContext = grpc.aio.ServicerContext[Any, Any]
_Behaviour = Callable[..., Any]

_SERVING = health_pb2.HealthCheckResponse.SERVING

T = TypeVar("T")


class Requests(Generic[T]):
    """The request stream a client- or bidi-streaming handler receives: read it with
    ``async for`` in an ``async def`` handler, with ``for`` in a ``def`` one (which
    runs in a worker thread, each read handed to the event loop)."""

    __slots__ = ("_loop", "_source", "_stream")

    def __init__(self, source: AsyncIterable[T], loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop
        self._stream: AsyncIterator[T] | None = None

    def __aiter__(self) -> Requests[T]:
        return self

    def __anext__(self) -> Awaitable[T]:
        if self._stream is None:  # made on first read: a stream never read is never started
            self._stream = aiter(self._source)
        return anext(self._stream)

    def __iter__(self) -> Requests[T]:
        return self

    def __next__(self) -> T:
        if _running_loop() is self._loop:
            raise TypeError("read the request stream with `async for` in an async handler")
        try:
            return asyncio.run_coroutine_threadsafe(self._read(), self._loop).result()
        except StopAsyncIteration:
            raise StopIteration from None

    async def _read(self) -> T:
        return await self.__anext__()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Handler:
    """Base of generated ``<Svc>Handler`` classes; subclass the generated one.

    Methods you do not override answer UNIMPLEMENTED.
    """

    __service__: ClassVar[ServiceDescriptor]


class _Arrivals:
    """What the server knows of its handler calls: when the last one arrived (a
    stopping server serves until its callers have moved on to other nodes), how many
    are in progress, and how many it takes (``limit``: the cap, 0 once stopping)."""

    __slots__ = ("calls", "idle", "last", "limit")

    def __init__(self, limit: int | None = None) -> None:
        self.last = -math.inf
        self.limit = sys.maxsize if limit is None else limit
        self.calls = 0
        self.idle: asyncio.Event | None = None  # set once stopping and no call is left

    def stop(self) -> asyncio.Event:
        """Take no more calls; the event is set once those in progress have ended."""
        self.limit = 0
        self.idle = asyncio.Event()
        if not self.calls:
            self.idle.set()
        return self.idle

    def ended(self) -> None:
        self.calls -= 1
        if self.idle is not None and not self.calls:
            self.idle.set()


def mount(
    server: grpc.aio.Server, *handlers: Handler, middleware: Sequence[Middleware] = ()
) -> None:
    """Serve ``handlers`` on a plain ``grpc.aio.Server`` (for teams keeping theirs).

    server = grpc.aio.server()
    micro.mount(server, MyGreeter())
    """
    _mount(server, handlers, _Arrivals(), Workers(), chain(middleware))


def _mount(
    server: grpc.aio.Server,
    handlers: tuple[Handler, ...],
    arrivals: _Arrivals,
    workers: Workers,
    hooks: Chain | None,
) -> None:
    for handler in handlers:
        service = handler.__service__
        methods = {
            m.path.rsplit("/", 1)[1]: method_handler(handler, m, arrivals, workers, hooks)
            for m in service.methods
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.name, methods),)
        )
        server.add_registered_method_handlers(service.name, methods)  # type: ignore[attr-defined]


class Server:
    """A grpc.aio server with micro's defaults: health and reflection services,
    message size limits, and a stop that lets calls in flight finish.

    ``max_calls`` caps the handler calls in progress: one more is refused at once
    with RESOURCE_EXHAUSTED (marked, so clients try another node), which keeps the
    calls it takes fast instead of every call slow. Health and reflection are not
    counted. ``threads``: how many ``def`` handler calls run at once (``micro.workers``).
    ``tls``: serve TLS only, with client certificates required if it has a CA
    (``micro.tls``). ``reflection=False``: do not list the services to anyone who asks;
    ``guard(method, metadata)``, raising a ``micro.errors`` error to refuse, admits the
    callers of reflection (auth's ``check``: handlers have middleware, reflection not).
    ``compression``: how replies are compressed unless a handler says otherwise
    (``ctx.set_compression``); ``options``: any grpc server option, e.g.
    ``("grpc.keepalive_time_ms", 20000)``.
    ``middleware`` hooks every handler call, in the order given (``micro.Middleware``).

    server = Server("127.0.0.1:0"); server.add(MyGreeter()); await server.start()
    """

    def __init__(
        self,
        address: str = "127.0.0.1:0",
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        health: bool = True,
        reflection: bool = True,
        max_calls: int | None = None,
        threads: int | None = None,
        compression: grpc.Compression | None = None,
        middleware: Sequence[Middleware] = (),
        options: tuple[tuple[str, Any], ...] = (),
        tls: Tls | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.requested_address = address
        if tls is not None and not tls.serves:
            raise ValueError("Server tls: a TLS server needs a certificate and key")
        self.tls = tls
        self.guard = guard
        self.compression = compression
        self.max_message_size = max_message_size
        self.handlers: list[Handler] = []
        self._options = options
        self._reflection = reflection
        self._health: health_aio.HealthServicer | None = (
            health_aio.HealthServicer() if health else None
        )
        self._server: grpc.aio.Server | None = None
        if max_calls is not None and max_calls < 1:
            raise ValueError(f"Server max_calls={max_calls}: must be at least 1")
        self._arrivals = _Arrivals(max_calls)
        self._workers = Workers(threads)
        self.chain = chain(middleware)
        self.address = ""

    def add(self, *handlers: Handler) -> None:
        if self._server is not None:
            raise RuntimeError("add handlers before the server starts")
        self.handlers.extend(handlers)

    @property
    def threads(self) -> int:
        """How many ``def`` handler calls run at once."""
        return self._workers.size

    @property
    def services(self) -> tuple[ServiceDescriptor, ...]:
        return tuple(h.__service__ for h in self.handlers)

    async def start(self) -> str:
        """Bind and serve; returns the bound ``host:port`` (port 0 resolved)."""
        limit = self.max_message_size
        server = grpc.aio.server(
            options=(
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                *self._options,
            ),
            compression=self.compression,
        )
        _mount(server, tuple(self.handlers), self._arrivals, self._workers, self.chain)
        names = [s.name for s in self.services]
        if self._health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            for name in names:
                await self._health.set(name, _SERVING)
            names.append(grpc_health.SERVICE_NAME)
        if self._reflection:
            listed = (*names, reflection.SERVICE_NAME)
            if self.guard is None:
                reflection.enable_server_reflection(listed, server)
            else:
                servicer = _GuardedReflection(listed, guard=self.guard)
                reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
        host = self.requested_address.rpartition(":")[0]
        try:
            if self.tls is None:
                port = server.add_insecure_port(self.requested_address)
            else:
                port = server.add_secure_port(self.requested_address, self.tls.server_credentials())
        except RuntimeError as e:
            raise OSError(f"cannot bind gRPC server to {self.requested_address}: {e}") from None
        await server.start()
        self._server = server
        self.address = f"{host}:{port}"
        return self.address

    async def not_serving(self) -> None:
        """Tell health checkers to stop sending calls (first step of a shutdown)."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    async def quiesce(self, quiet: float, limit: float) -> None:
        """Go on serving until no call has arrived for ``quiet`` seconds (counted from
        now at the earliest), ``limit`` at most: after a deregistration, callers whose
        registry cache still lists this node are served, not refused, until their
        caches catch up."""
        begun = time.monotonic()
        while True:  # a timer, not an event: each arrival moves the end of the wait
            end = min(max(begun, self._arrivals.last) + quiet, begun + limit)
            if (wait := end - time.monotonic()) <= 0:
                return
            await asyncio.sleep(wait)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give calls in flight ``grace`` seconds, cancel the rest
        (a ``def`` handler's thread cannot be stopped: it is abandoned, and logged).

        New calls are refused by micro, not grpc: UNAVAILABLE marked as refused, so
        callers know the call never ran and that this node is stopping (grpc's own
        refusal, once its stop has begun, is a bare CANCELLED, as for an overload)."""
        if self._server is None:
            return
        begun = time.monotonic()
        await self.not_serving()
        server, self._server = self._server, None
        idle = self._arrivals.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(idle.wait(), grace)
        left = None if grace is None else max(0.0, grace - (time.monotonic() - begun))
        await server.stop(left)
        self._workers.abandon()

    async def wait(self) -> None:
        """Until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()


def method_handler(
    handler: Handler,
    method: Method[Any, Any],
    arrivals: _Arrivals,
    workers: Workers,
    hooks: Chain | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The grpc method handler that runs ``handler``'s implementation of ``method``."""
    impl = getattr(handler, method.name)
    behaviour = _ADAPTERS[method.kind](impl, method, arrivals, workers, hooks)
    make = getattr(grpc, f"{method.kind}_rpc_method_handler")
    handler_: grpc.RpcMethodHandler[Any, Any] = make(
        behaviour,
        request_deserializer=(
            method.deserialize_request if method.client_streaming else _lenient(method)
        ),
        response_serializer=method.response.SerializeToString,
    )
    return handler_


class _Malformed:
    """Stands in for a request that did not parse, so the call can be answered with
    INVALID_ARGUMENT instead of grpc's bare INTERNAL."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _lenient(method: Method[Any, Any]) -> Callable[[bytes], Any]:
    deserialize = method.deserialize_request

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as e:
            return _Malformed(e)

    return parse


async def _reject(gctx: _GrpcContext, method: Method[Any, Any], request: _Malformed) -> NoReturn:
    name = method.request.DESCRIPTOR.full_name
    await gctx.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"{method.path}: malformed {name}: {request.error}"
    )


async def _fail(
    gctx: _GrpcContext,
    method: Method[Any, Any],
    exc: Exception,
    ctx: Context,
    endings: Endings | None,
) -> NoReturn:
    """Map what a handler (or a middleware hook) raised to a status: the server's
    single error boundary. Headers and trailers the handler set go with it;
    ``endings``, the hooks', are told the status the caller gets."""
    if ctx._initial is not None:
        await _send_initial(gctx, ctx)
    if isinstance(exc, errors.ServiceNotFound):
        # The handler's own call found no node: for its caller, whose call was found,
        # a dependency is unavailable (a NOT_FOUND would say the caller's call was not).
        exc = errors.Unavailable(f"{method.path} could not reach a dependency: {exc.message}")
    if isinstance(exc, errors.Error):
        if endings:
            end(endings, failed(exc))
        await gctx.abort(exc.code, exc.message, ctx.trailers + exc.status_trailers())
    # An unexpected exception is a bug in the handler: log it here, and tell the
    # caller only that it happened (a traceback may hold secrets).
    log.exception("unhandled error in %s", method.path)
    if endings:
        end(endings, Outcome(exc, grpc.StatusCode.INTERNAL))
    await gctx.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.path}")


async def _arrive(gctx: _GrpcContext, method: Method[Any, Any], arrivals: _Arrivals) -> Context:
    """A call arrives: refused beyond the cap, else counted (until ``arrivals.ended``)."""
    arrivals.last = time.monotonic()
    if arrivals.calls >= arrivals.limit:
        await _refuse(gctx, method, arrivals)
    arrivals.calls += 1
    return Context(gctx, method)


async def _open(
    request: Any, gctx: _GrpcContext, ctx: Context, hooks: Chain | None
) -> tuple[Any, Endings | None]:
    """The request as the handler takes it, the call made current (each runs in a task
    of its own: nothing to reset), and its hooks begun."""
    method = ctx.method
    if method.client_streaming:
        request = Requests(request, asyncio.get_running_loop())
    elif type(request) is _Malformed:
        await _reject(gctx, method, request)
    inbound.set(ctx)
    return request, None if hooks is None else _handling(hooks, method, ctx)


async def _succeeded(gctx: _GrpcContext, ctx: Context, endings: Endings | None) -> None:
    """The handler is done: headers not sent yet go before the status."""
    if ctx._initial is not None:
        await _send_initial(gctx, ctx)
    if endings:
        end(endings, SUCCEEDED)


async def _close(
    e: BaseException, gctx: _GrpcContext, ctx: Context, endings: Endings | None
) -> None:
    """The call ended with ``e``: a handler's error is mapped to its status (``_fail``);
    a cancellation, an abort with the status grpc holds, or a stream closed early is
    told to the hooks and goes on up."""
    if isinstance(e, Exception) and not isinstance(e, grpc.aio.AbortError):
        await _fail(gctx, ctx.method, e, ctx, endings)
        return
    if isinstance(e, asyncio.CancelledError):
        ctx._cancel()
    _ended(endings, e, gctx)
    raise e


async def _send_initial(gctx: _GrpcContext, ctx: Context) -> None:
    headers, ctx._initial = ctx._initial, None
    await gctx.send_initial_metadata(headers or ())


def _handling(hooks: Chain, method: Method[Any, Any], ctx: Context) -> Endings:
    return begin(hooks.handle, ServerCall(method.service, method.path, method.kind, ctx))


def _ended(endings: Endings | None, e: BaseException, gctx: _GrpcContext) -> None:
    """Tell the hooks of a call that ended outside ``_fail``: cancelled, or aborted
    with the status grpc holds."""
    if endings:
        code = gctx.code() if isinstance(e, grpc.aio.AbortError) else None
        end(endings, failed(e) if code is None else Outcome(e, code))


def _is_async(impl: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(impl)


def _unary_response(
    impl: Callable[..., Any],
    method: Method[Any, Any],
    arrivals: _Arrivals,
    workers: Workers,
    hooks: Chain | None,
) -> _Behaviour:
    run: Callable[[Any, Context], Awaitable[Any]]
    if _is_async(impl):
        run = impl
    else:

        def run(request: Any, ctx: Context) -> Awaitable[Any]:
            return workers.run(method.path, impl, request, ctx)

    async def behaviour(request: Any, gctx: _GrpcContext) -> Any:
        ctx = await _arrive(gctx, method, arrivals)
        endings = None
        try:
            request, endings = await _open(request, gctx, ctx, hooks)
            reply = await run(request, ctx)
            await _succeeded(gctx, ctx, endings)
            return reply
        except (Exception, asyncio.CancelledError) as e:
            await _close(e, gctx, ctx, endings)
        finally:
            arrivals.ended()

    return behaviour


def _stream_response(
    impl: Callable[..., Any],
    method: Method[Any, Any],
    arrivals: _Arrivals,
    workers: Workers,
    hooks: Chain | None,
) -> _Behaviour:
    agen = inspect.isasyncgenfunction(impl)

    async def behaviour(request: Any, gctx: _GrpcContext) -> AsyncIterator[Any]:
        ctx = await _arrive(gctx, method, arrivals)
        endings = None
        try:
            request, endings = await _open(request, gctx, ctx, hooks)
            if agen:
                replies = impl(request, ctx)
            else:
                replies = await workers.run(method.path, impl, request, ctx)
            if isinstance(replies, AsyncIterable):
                async for reply in replies:
                    if ctx._initial is not None:
                        await _send_initial(gctx, ctx)
                    yield reply
            else:
                iterator = iter(replies)
                while (reply := await workers.run(method.path, next, iterator, _END)) is not _END:
                    if ctx._initial is not None:
                        await _send_initial(gctx, ctx)
                    yield reply
            await _succeeded(gctx, ctx, endings)  # no reply: headers still go first
        except (Exception, asyncio.CancelledError, GeneratorExit) as e:
            await _close(e, gctx, ctx, endings)
        finally:
            arrivals.ended()

    return behaviour


_END = object()


async def _refuse(gctx: _GrpcContext, method: Method[Any, Any], arrivals: _Arrivals) -> NoReturn:
    """Answer a call that will not run, marked so the caller may send it elsewhere:
    UNAVAILABLE from a stopping server, RESOURCE_EXHAUSTED beyond the cap."""
    if arrivals.idle is not None:
        await gctx.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"{method.path}: refused, the server is stopping",
            ((errors.REFUSED_KEY, errors.STOPPING),),
        )
    await gctx.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{method.path}: refused, {arrivals.limit} calls in progress",
        ((errors.REFUSED_KEY, "overloaded"),),
    )


Guard = Callable[[str, dict[str, str | bytes]], object]


class _GuardedReflection(reflection_aio.ReflectionServicer):  # type: ignore[misc]
    """Reflection answering only the callers ``guard`` admits."""

    def __init__(self, names: tuple[str, ...], *, guard: Guard) -> None:
        super().__init__(names)
        self._guard = guard

    async def ServerReflectionInfo(  # grpc's name
        self, requests: AsyncIterable[Any], gctx: _GrpcContext
    ) -> AsyncIterator[Any]:
        try:
            self._guard(_REFLECTION_INFO, dict(gctx.invocation_metadata() or ()))
        except errors.Error as e:
            await gctx.abort(e.code, e.message)
        async for reply in super().ServerReflectionInfo(requests, gctx):
            yield reply


_REFLECTION_INFO = f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"

_ADAPTERS = {
    "unary_unary": _unary_response,
    "stream_unary": _unary_response,
    "unary_stream": _stream_response,
    "stream_stream": _stream_response,
}
