"""Serving handlers on grpc.aio: method adapters, error mapping, mounting.

A generated ``<Svc>Handler`` subclass becomes one grpc method handler per method.
Handlers may be ``async def`` (run on the event loop) or ``def`` (run in a worker
thread, so blocking code does not stall other calls).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, NoReturn

import grpc
import grpc.aio

from micro import errors
from micro.context import Context
from micro.method import Method, ServiceDescriptor

log = logging.getLogger("micro.server")

_GrpcContext = grpc.aio.ServicerContext[Any, Any]
_Behaviour = Callable[..., Any]


class Handler:
    """Base of generated ``<Svc>Handler`` classes; subclass the generated one.

    Methods you do not override answer UNIMPLEMENTED.
    """

    __service__: ClassVar[ServiceDescriptor]


def mount(server: grpc.aio.Server, *handlers: Handler) -> None:
    """Serve ``handlers`` on a plain ``grpc.aio.Server`` (for teams keeping theirs).

    server = grpc.aio.server()
    micro.mount(server, MyGreeter())
    """
    for handler in handlers:
        service = handler.__service__
        methods = {m.path.rsplit("/", 1)[1]: method_handler(handler, m) for m in service.methods}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.name, methods),)
        )
        server.add_registered_method_handlers(service.name, methods)  # type: ignore[attr-defined]


def method_handler(handler: Handler, method: Method[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The grpc method handler that runs ``handler``'s implementation of ``method``."""
    impl = getattr(handler, method.name)
    behaviour = _ADAPTERS[method.kind](impl, method)
    make = getattr(grpc, f"{method.kind}_rpc_method_handler")
    handler_: grpc.RpcMethodHandler[Any, Any] = make(
        behaviour,
        request_deserializer=method.deserialize_request,
        response_serializer=method.response.SerializeToString,
    )
    return handler_


async def _fail(gctx: _GrpcContext, method: Method[Any, Any], exc: Exception) -> NoReturn:
    """Map what a handler raised to a status: the server's single error boundary."""
    if isinstance(exc, errors.Error):
        await gctx.abort(exc.code, exc.message, exc.trailing_metadata())
    # An unexpected exception is a bug in the handler: log it here, and tell the
    # caller only that it happened (a traceback may hold secrets).
    log.exception("unhandled error in %s", method.path)
    await gctx.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.path}")


def _is_async(impl: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(impl)


def _unary_response(impl: Callable[..., Any], method: Method[Any, Any]) -> _Behaviour:
    run: Callable[[Any, Context], Awaitable[Any]]
    if _is_async(impl):
        run = impl
    else:

        def run(request: Any, ctx: Context) -> Awaitable[Any]:
            return asyncio.to_thread(impl, _blocking(request), ctx)

    async def behaviour(request: Any, gctx: _GrpcContext) -> Any:
        try:
            return await run(request, Context(gctx, method))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as e:
            await _fail(gctx, method, e)

    return behaviour


def _stream_response(impl: Callable[..., Any], method: Method[Any, Any]) -> _Behaviour:
    agen = inspect.isasyncgenfunction(impl)

    async def behaviour(request: Any, gctx: _GrpcContext) -> AsyncIterator[Any]:
        try:
            ctx = Context(gctx, method)
            if agen:
                replies = impl(request, ctx)
            else:
                replies = await asyncio.to_thread(impl, _blocking(request), ctx)
            if isinstance(replies, AsyncIterable):
                async for reply in replies:
                    yield reply
            else:
                iterator = iter(replies)
                while (reply := await asyncio.to_thread(next, iterator, _END)) is not _END:
                    yield reply
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as e:
            await _fail(gctx, method, e)

    return behaviour


_END = object()


def _blocking(requests: Any) -> Any:
    """A request stream made iterable from a worker thread (for ``def`` handlers)."""
    if not isinstance(requests, AsyncIterable):
        return requests
    loop = asyncio.get_running_loop()
    stream = aiter(requests)

    def pull() -> Iterator[Any]:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(anext(stream), loop).result()  # type: ignore[arg-type]
            except StopAsyncIteration:
                return

    return pull()


_ADAPTERS = {
    "unary_unary": _unary_response,
    "stream_unary": _unary_response,
    "unary_stream": _stream_response,
    "stream_stream": _stream_response,
}
