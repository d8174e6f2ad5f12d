"""``Stub`` and ``SyncStub``, bases of generated clients: thin async and blocking
drivers over one ``Call`` (``micro.client``).

Each driver is the I/O loop of a call: wait the plan's delay, send on the node the
plan names, and report how the attempt went; the ``Call`` keeps the books, runs the
middleware and says whether to try again. Generated ``<Svc>Client`` /
``<Svc>SyncClient`` classes subclass these; each generated method is one call into
``_<kind>`` here.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio

from micro.calls import _Handle
from micro.client import Call, CallOptions, Client, Metadata
from micro.method import Method, Resp
from micro.pool import ready, ready_sync

_DEFAULT = CallOptions()
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # what read() returns at a stream's end


class _Base:
    """What both stubs hold: the service they call, the client, their options."""

    __slots__ = ("_client", "_options", "_service")

    def __init__(self, service: str, client: Client, *, options: CallOptions | None = None):
        self._service = service
        self._client = client
        self._options = options or _DEFAULT

    def _over(self, options: CallOptions | None) -> CallOptions:
        """A call's options over the stub's."""
        return self._options if options is None else options.over(self._options)


class Stub(_Base):
    """Base of generated async clients: ``GreeterClient("greeter", client)``."""

    __slots__ = ()

    async def _call(
        self,
        method: Method[Any, Any],
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Call:
        opts = self._over(options)
        client = self._client
        try:
            return client._start(self._service, method, opts, timeout, metadata, False)
        except LookupError:
            await client._lookup(self._service, client._deadline(method, timeout))
            return client._start(self._service, method, opts, timeout, metadata, False)

    async def _unary_unary(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
        handle: _Handle | None = None,
    ) -> Resp:
        """Unary and client-streaming calls: one answer, retried as the plan allows."""
        if method.deprecated:
            _deprecated(method, 4)
        call = await self._call(method, timeout, metadata, options)
        while True:
            try:
                if call.delay:
                    await asyncio.sleep(call.delay)
                send = call.send()
                if method.connect_first and not await ready(call.sending, call.plan.timeout):
                    call.unreachable()
                    continue
                attempt = send(
                    request,
                    timeout=call.plan.timeout,
                    metadata=call.metadata,
                    compression=call.compression,
                )
                if handle is not None:
                    handle.attempt(attempt)
                response: Resp = await attempt
            except grpc.RpcError as e:
                call.failed(e)
            except BaseException as e:
                call.abort(e)
                raise
            else:
                call.succeeded()
                return response

    _stream_unary = _unary_unary

    async def _unary_stream(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
        handle: _Handle | None = None,
    ) -> AsyncIterator[Resp]:
        """Server-streaming calls: one node for the whole stream; retried only
        before the first message arrived."""
        if method.deprecated:
            _deprecated(method, 3)
        call = await self._call(method, timeout, metadata, options)
        while True:
            received = False
            stream = None
            try:
                if call.delay:
                    await asyncio.sleep(call.delay)
                send = call.send()
                if method.connect_first and not await ready(call.sending, call.plan.timeout):
                    call.unreachable()
                    continue
                plan = call.plan
                stream = send(
                    request,
                    timeout=plan.remaining,
                    metadata=call.metadata,
                    compression=call.compression,
                )
                if handle is not None:
                    handle.attempt(stream)
                if plan.expires is None:
                    response = await stream.read()
                else:
                    response = await asyncio.wait_for(stream.read(), plan.timeout)
                while response is not _EOF:
                    received = True
                    yield response
                    response = await stream.read()
            except grpc.RpcError as e:
                call.failed(e, received)
            except asyncio.TimeoutError:  # no first reply within the attempt timeout
                call.expired(received)
            except BaseException as e:  # cancelled, or the reader stopped reading
                call.abort(e)
                raise
            else:
                call.succeeded()
                return
            finally:
                if stream is not None:
                    stream.cancel()

    _stream_stream = _unary_stream


class SyncStub(_Base):
    """Base of generated blocking clients: ``GreeterSyncClient("greeter", client)``."""

    __slots__ = ()

    def _call(
        self,
        method: Method[Any, Any],
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Call:
        opts = self._over(options)
        client = self._client
        try:
            return client._start(self._service, method, opts, timeout, metadata, True)
        except LookupError:
            client._run(client._lookup(self._service, client._deadline(method, timeout)))
            return client._start(self._service, method, opts, timeout, metadata, True)

    def _unary_unary(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
        handle: _Handle | None = None,
    ) -> Resp:
        if method.deprecated:
            _deprecated(method, 4)
        call = self._call(method, timeout, metadata, options)
        if method.client_streaming:
            request = iter(request)
        while True:
            try:
                if call.delay:
                    time.sleep(call.delay)
                send = call.send()
                if method.connect_first and not ready_sync(call.sending, call.plan.timeout):
                    call.unreachable()
                    continue
                if handle is None:
                    response: Resp = send(
                        request,
                        timeout=call.plan.timeout,
                        metadata=call.metadata,
                        compression=call.compression,
                    )
                else:  # a future, which its handle may cancel from another thread
                    future = send.future(
                        request,
                        timeout=call.plan.timeout,
                        metadata=call.metadata,
                        compression=call.compression,
                    )
                    handle.attempt(future)
                    response = future.result()
            except grpc.RpcError as e:
                call.failed(e)
            except BaseException as e:
                call.abort(e)
                raise
            else:
                call.succeeded()
                return response

    _stream_unary = _unary_unary

    def _unary_stream(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
        handle: _Handle | None = None,
    ) -> Iterator[Resp]:
        if method.deprecated:
            _deprecated(method, 3)
        call = self._call(method, timeout, metadata, options)
        if method.client_streaming:
            request = iter(request)
        while True:
            received = False
            stream = None
            watchdog = None
            try:
                if call.delay:
                    time.sleep(call.delay)
                send = call.send()
                if method.connect_first and not ready_sync(call.sending, call.plan.timeout):
                    call.unreachable()
                    continue
                plan = call.plan
                stream = send(
                    request,
                    timeout=plan.remaining,
                    metadata=call.metadata,
                    compression=call.compression,
                )
                if handle is not None:
                    handle.attempt(stream)
                if plan.expires is not None:
                    watchdog = _Watchdog(stream.cancel, plan.expires)
                for response in stream:
                    if not received and watchdog is not None:
                        watchdog.stop()
                    received = True
                    yield response
            except grpc.RpcError as e:
                if watchdog is not None and watchdog.fired:
                    call.expired(received)
                else:
                    call.failed(e, received)
            except BaseException as e:  # the reader stopped reading, say
                call.abort(e)
                raise
            else:
                call.succeeded()
                return
            finally:
                if watchdog is not None:
                    watchdog.stop()
                if stream is not None:
                    stream.cancel()

    _stream_stream = _unary_stream


class _Watchdog:
    """Cancels a blocking stream that sends nothing before its attempt ``expires``
    (monotonic time): grpc's blocking iterator has no wait with a timeout."""

    __slots__ = ("fired", "timer")

    def __init__(self, cancel: Callable[[], object], expires: float) -> None:
        self.fired = False
        self.timer = threading.Timer(max(0.0, expires - time.monotonic()), self._fire, (cancel,))
        self.timer.daemon = True
        self.timer.start()

    def _fire(self, cancel: Callable[[], object]) -> None:
        self.fired = True
        cancel()

    def stop(self) -> None:
        self.timer.cancel()


def _deprecated(method: Method[Any, Any], stacklevel: int) -> None:
    """Warn at the caller's line: the generated method calls a unary driver, while a
    streaming driver runs straight from the caller's loop."""
    warnings.warn(f"{method.path} is deprecated", DeprecationWarning, stacklevel=stacklevel)
