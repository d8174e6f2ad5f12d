"""Call handles: what a caller holds of a call in progress, beyond its replies.

A generated ``<Svc>Calls`` (async) or ``<Svc>SyncCalls`` (blocking) stub starts each
call at once and returns its handle: the response headers, trailers, status and
details of the call (of its last attempt: calls still go through discovery,
balancing, middleware and retries), ``cancel()``, and for a request stream
``write`` / ``done_writing`` instead of an iterator given up front.

    call = GreeterCalls("greeter", client).say_hello(HelloRequest(name="Ada"))
    reply = await call
    print(await call.initial_metadata(), await call.trailing_metadata(), await call.code())

The plain ``<Svc>Client`` methods stay as they are and pay nothing for this: the
drivers (``micro.stub``) report each attempt's grpc call to a handle only when there
is one. A blocking handle runs its call on a thread of its own (``result()`` waits
for it, like a future), so it can be cancelled from the thread that holds it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic

import grpc

from micro import errors
from micro.errors import Pairs, pairs
from micro.method import Method, Req, Resp

if TYPE_CHECKING:
    from micro.client import CallOptions, Metadata
    from micro.stub import Stub, SyncStub


OK = grpc.StatusCode.OK
_END: Any = object()  # ends a request or reply queue


def _status(error: BaseException | None, cancelled: bool) -> tuple[grpc.StatusCode, str]:
    """A finished call's status code and details."""
    if cancelled:
        return grpc.StatusCode.CANCELLED, "cancelled by the caller"
    if error is None:
        return OK, ""
    if isinstance(error, errors.Error):
        return error.code, error.message
    return grpc.StatusCode.UNKNOWN, str(error)


class _Handle:
    """What the drivers report to: the grpc call of each attempt (the last one is what
    the handle's headers and trailers come from)."""

    _grpc: Any = None
    _cancelling = False

    def attempt(self, grpc_call: Any) -> None:
        self._grpc = grpc_call
        if self._cancelling:  # cancelled between attempts: this one ends at once
            grpc_call.cancel()
        self._started()

    def _started(self) -> None:
        raise NotImplementedError


# -- async ---------------------------------------------------------------------------


class _AsyncCall(_Handle):
    """Status, metadata and cancellation of an async call run by ``_task``."""

    _task: asyncio.Task[Any]

    def __init__(self) -> None:
        self._attempted = asyncio.Event()

    def _started(self) -> None:
        self._attempted.set()

    def cancel(self) -> bool:
        """Cancel the call; False if it has already ended."""
        if self._task.done():
            return False
        self._cancelling = True
        if self._grpc is not None:
            self._grpc.cancel()
        return self._task.cancel()

    def cancelled(self) -> bool:
        return self._task.cancelled()

    def done(self) -> bool:
        return self._task.done()

    async def _ended(self) -> BaseException | None:
        await asyncio.wait((self._task,))
        return None if self._task.cancelled() else self._task.exception()

    async def initial_metadata(self) -> Pairs:
        """The response headers (once they arrive; () if the call ended without)."""
        waiting = asyncio.ensure_future(self._attempted.wait())
        await asyncio.wait((waiting, self._task), return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if self._grpc is None or self._grpc.cancelled():
            error = (
                None if self._task.cancelled() or not self._task.done() else self._task.exception()
            )
            return error.initial_metadata if isinstance(error, errors.Error) else ()
        try:
            return pairs(await self._grpc.initial_metadata())
        except (grpc.RpcError, asyncio.CancelledError):
            return ()

    async def trailing_metadata(self) -> Pairs:
        """The trailers, once the call has ended."""
        error = await self._ended()
        if isinstance(error, errors.Error):
            return error.trailing_metadata
        if self._grpc is None or self._task.cancelled():
            return ()
        return pairs(await self._grpc.trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        """The status code, once the call has ended (CANCELLED if cancelled here)."""
        error = await self._ended()
        return _status(error, self._task.cancelled())[0]

    async def details(self) -> str:
        """The status message, once the call has ended."""
        error = await self._ended()
        return _status(error, self._task.cancelled())[1]


class _Writer(Generic[Req]):
    """Requests written one by one: the request stream the driver sends."""

    def __init__(self, requests: AsyncIterable[Req] | Iterable[Req] | None) -> None:
        self._queue: asyncio.Queue[Req] | None = None
        self.source: AsyncIterable[Req] | Iterable[Req]
        if requests is None:
            self._queue = asyncio.Queue()
            self.source = self._written(self._queue)
        else:
            self.source = requests

    async def write(self, request: Req) -> None:
        """Send ``request`` next."""
        if self._queue is None:
            raise RuntimeError("write: this call was given its requests as an iterable")
        await self._queue.put(request)

    async def done_writing(self) -> None:
        """No more requests (the server sees the end of its request stream)."""
        if self._queue is None:
            raise RuntimeError("done_writing: this call was given its requests as an iterable")
        await self._queue.put(_END)

    @staticmethod
    async def _written(source: asyncio.Queue[Req]) -> AsyncIterator[Req]:
        while (request := await source.get()) is not _END:
            yield request


class UnaryUnaryCall(_AsyncCall, Generic[Resp]):
    """A call with one reply: ``await call`` for it."""

    def __init__(
        self,
        stub: Stub,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        super().__init__()
        run = stub._unary_unary(method, request, timeout, metadata, options, self)
        self._task: asyncio.Task[Resp] = asyncio.ensure_future(run)

    def __await__(self) -> Generator[Any, None, Resp]:
        return self._task.__await__()


class StreamUnaryCall(UnaryUnaryCall[Resp], _Writer[Req], Generic[Req, Resp]):
    """A request stream, one reply: ``await call.write(r)`` … ``await
    call.done_writing()`` (unless the requests were given), then ``await call``."""

    def __init__(
        self,
        stub: Stub,
        method: Method[Req, Resp],
        requests: AsyncIterable[Req] | Iterable[Req] | None,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        _Writer.__init__(self, requests)
        UnaryUnaryCall.__init__(self, stub, method, self.source, timeout, metadata, options)


class UnaryStreamCall(_AsyncCall, Generic[Resp]):
    """A call with a reply stream: ``async for reply in call`` or ``await call.read()``
    (None after the last). Replies are read ahead by one."""

    def __init__(
        self,
        stub: Stub,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        super().__init__()
        self._replies: asyncio.Queue[Resp] = asyncio.Queue(maxsize=1)
        replies = stub._unary_stream(method, request, timeout, metadata, options, self)
        self._task = asyncio.ensure_future(self._pump(replies))

    async def _pump(self, replies: AsyncIterator[Resp]) -> None:
        async for reply in replies:
            await self._replies.put(reply)

    async def read(self) -> Resp | None:
        """The next reply, None after the last; raises the call's error."""
        if self._replies.empty() and not self._task.done():
            getting = asyncio.ensure_future(self._replies.get())
            await asyncio.wait((getting, self._task), return_when=asyncio.FIRST_COMPLETED)
            if getting.done():
                return getting.result()
            getting.cancel()
        if not self._replies.empty():
            return self._replies.get_nowait()
        if self._task.cancelled():
            raise asyncio.CancelledError
        error = self._task.exception()
        if error is not None:
            raise error
        return None

    def __aiter__(self) -> AsyncIterator[Resp]:
        return self._each()

    async def _each(self) -> AsyncIterator[Resp]:
        try:
            while (reply := await self.read()) is not None:
                yield reply
        finally:  # a reader that stops early is done with the call
            self.cancel()


class StreamStreamCall(UnaryStreamCall[Resp], _Writer[Req], Generic[Req, Resp]):
    """Both ways streamed, interactively: ``await call.write(r)``, ``await
    call.read()``, ``await call.done_writing()``."""

    def __init__(
        self,
        stub: Stub,
        method: Method[Req, Resp],
        requests: AsyncIterable[Req] | Iterable[Req] | None,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        _Writer.__init__(self, requests)
        UnaryStreamCall.__init__(self, stub, method, self.source, timeout, metadata, options)


# -- blocking ------------------------------------------------------------------------


class _SyncCall(_Handle):
    """Status, metadata and cancellation of a blocking call run on a thread of its own
    (so whoever holds it can cancel it, or do something else meanwhile)."""

    def __init__(self, run: Callable[[], object]) -> None:
        self._attempted = threading.Event()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(run,), name="micro-call", daemon=True).start()

    def _run(self, run: Callable[[], object]) -> None:
        try:
            run()
        except BaseException as e:  # the call's outcome, raised to whoever asks for it
            self._error = e
        finally:
            self._ended.set()
            self._attempted.set()

    def _started(self) -> None:
        self._attempted.set()

    def cancel(self) -> bool:
        """Cancel the call; False if it has already ended."""
        if self._ended.is_set():
            return False
        self._cancelling = True
        if self._grpc is not None:
            self._grpc.cancel()
        return True

    def cancelled(self) -> bool:
        return self._cancelling and self._ended.is_set() and self._error is not None

    def done(self) -> bool:
        return self._ended.is_set()

    def _failure(self) -> BaseException | None:
        """The call's error, as raised to the caller (a cancel here is ``Cancelled``)."""
        if self._error is not None and self._cancelling:
            return errors.Cancelled("cancelled by the caller")
        return self._error

    def initial_metadata(self) -> Pairs:
        """The response headers (once they arrive; () if the call ended without)."""
        self._attempted.wait()
        error = self._failure() if self._ended.is_set() else None
        if isinstance(error, errors.Error) and error.initial_metadata:
            return error.initial_metadata
        if self._grpc is None or self._cancelling:
            return ()
        try:
            return pairs(self._grpc.initial_metadata())
        except grpc.RpcError:
            return ()

    def trailing_metadata(self) -> Pairs:
        """The trailers, once the call has ended."""
        self._ended.wait()
        error = self._failure()
        if isinstance(error, errors.Error):
            return error.trailing_metadata
        return () if self._grpc is None else pairs(self._grpc.trailing_metadata())

    def code(self) -> grpc.StatusCode:
        """The status code, once the call has ended."""
        self._ended.wait()
        return _status(self._failure(), False)[0]

    def details(self) -> str:
        """The status message, once the call has ended."""
        self._ended.wait()
        return _status(self._failure(), False)[1]


class _SyncWriter(Generic[Req]):
    """Requests written one by one: the request stream a blocking driver sends."""

    def __init__(self, requests: Iterable[Req] | None) -> None:
        self._queue: queue.SimpleQueue[Req] | None = None
        self.source: Iterable[Req]
        if requests is None:
            self._queue = queue.SimpleQueue()
            self.source = iter(self._queue.get, _END)
        else:
            self.source = requests

    def write(self, request: Req) -> None:
        """Send ``request`` next."""
        if self._queue is None:
            raise RuntimeError("write: this call was given its requests as an iterable")
        self._queue.put(request)

    def done_writing(self) -> None:
        """No more requests (the server sees the end of its request stream)."""
        if self._queue is None:
            raise RuntimeError("done_writing: this call was given its requests as an iterable")
        self._queue.put(_END)


class SyncUnaryUnaryCall(_SyncCall, Generic[Resp]):
    """A blocking call with one reply, future-like: ``call.result(timeout)``."""

    def __init__(
        self,
        stub: SyncStub,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        self._reply: Resp | None = None

        def run() -> None:
            self._reply = stub._unary_unary(method, request, timeout, metadata, options, self)

        super().__init__(run)

    def result(self, timeout: float | None = None) -> Resp:
        """The reply; raises the call's error, ``TimeoutError`` after ``timeout`` s."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"no reply within {timeout} s")
        error = self._failure()
        if error is not None:
            raise error
        return self._reply  # type: ignore[return-value]


class SyncStreamUnaryCall(SyncUnaryUnaryCall[Resp], _SyncWriter[Req], Generic[Req, Resp]):
    """A blocking request stream with one reply: ``call.write(r)`` …
    ``call.done_writing()`` (unless the requests were given), ``call.result()``."""

    def __init__(
        self,
        stub: SyncStub,
        method: Method[Req, Resp],
        requests: Iterable[Req] | None,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        _SyncWriter.__init__(self, requests)
        SyncUnaryUnaryCall.__init__(self, stub, method, self.source, timeout, metadata, options)


class SyncUnaryStreamCall(_SyncCall, Generic[Resp]):
    """A blocking call with a reply stream: ``for reply in call`` or ``call.read()``
    (None after the last). Its thread reads replies ahead as they arrive."""

    def __init__(
        self,
        stub: SyncStub,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        self._replies: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def run() -> None:
            try:
                for reply in stub._unary_stream(method, request, timeout, metadata, options, self):
                    self._replies.put(reply)
            finally:
                self._replies.put(_END)

        super().__init__(run)

    def read(self) -> Resp | None:
        """The next reply, None after the last; raises the call's error."""
        reply = self._replies.get()
        if reply is not _END:
            return reply  # type: ignore[no-any-return]
        self._replies.put(_END)  # for the next read
        self._ended.wait()  # the thread is ending: it has recorded the outcome
        error = self._failure()
        if error is not None:
            raise error
        return None

    def __iter__(self) -> Iterator[Resp]:
        try:
            while (reply := self.read()) is not None:
                yield reply
        finally:  # a reader that stops early is done with the call
            self.cancel()


class SyncStreamStreamCall(SyncUnaryStreamCall[Resp], _SyncWriter[Req], Generic[Req, Resp]):
    """Both ways streamed, blocking and interactive: ``call.write(r)``,
    ``call.read()``, ``call.done_writing()``."""

    def __init__(
        self,
        stub: SyncStub,
        method: Method[Req, Resp],
        requests: Iterable[Req] | None,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> None:
        _SyncWriter.__init__(self, requests)
        SyncUnaryStreamCall.__init__(self, stub, method, self.source, timeout, metadata, options)
