"""Middleware on real calls: client (call and attempt), server (handle), async and
blocking, unary and streaming, over grpc on loopback."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterator

import echo_micro
import echo_pb2
import grpc
import pytest
from echo_node import Echo

import micro
from micro import errors
from micro.registry import MemoryRegistry

CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
OK = grpc.StatusCode.OK

user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="nobody")


class Log(micro.Middleware):
    """Records every hook's begin and end as text, in one shared list."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def _ending(self, what: str) -> micro.Ending:
        self.log.append(f"{self.name} {what}")
        return lambda outcome: self.log.append(f"{self.name} end {what} {outcome.code.name}")

    def call(self, call: micro.ClientCall) -> micro.Ending:
        return self._ending(f"call {call.method} {call.kind}")

    def attempt(self, attempt: micro.ClientAttempt) -> micro.Ending:
        return self._ending(f"attempt {attempt.number}")

    def handle(self, call: micro.ServerCall) -> micro.Ending:
        return self._ending(f"handle {call.method} {call.kind}")


class Attempts(micro.Middleware):
    """Keeps each attempt and how it ended."""

    def __init__(self) -> None:
        self.seen: list[tuple[micro.ClientAttempt, micro.Outcome]] = []

    def attempt(self, attempt: micro.ClientAttempt) -> micro.Ending:
        return lambda outcome: self.seen.append((attempt, outcome))


class Identity(micro.Middleware):
    """Sets ``user`` from the caller's metadata while the handler runs."""

    def handle(self, call: micro.ServerCall) -> micro.Ending:
        token = user.set(str(call.ctx.metadata.get("x-user", "anonymous")))
        return lambda outcome: user.reset(token)


class Endings(micro.Middleware):
    """Hands each server call's outcome to a queue the test awaits."""

    def __init__(self) -> None:
        self.outcomes: asyncio.Queue[micro.Outcome] = asyncio.Queue()

    def handle(self, call: micro.ServerCall) -> micro.Ending:
        return self.outcomes.put_nowait


class Streams(Echo):
    """Echo with a ``def`` put that says who the middleware says calls, and a watch
    that fails or waits after its first reply when asked."""

    def __init__(self, node: str = "") -> None:
        super().__init__(node)
        self.streaming = asyncio.Event()  # a watch sent its first reply and waits

    async def get(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:
        return echo_pb2.EchoReply(text=user.get(), node=self.node)

    def put(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:  # type: ignore[override]
        return echo_pb2.EchoReply(text=user.get(), node=self.node)

    async def watch(
        self, request: echo_pb2.EchoRequest, ctx: micro.Context
    ) -> AsyncIterator[echo_pb2.EchoReply]:
        yield echo_pb2.EchoReply(text=user.get(), node=self.node)
        if request.fail:
            raise errors.for_code(grpc.StatusCode[request.fail], "fails as asked")
        if request.text == "hold":
            self.streaming.set()
            await self.release.wait()  # never set: the client cancels
        yield echo_pb2.EchoReply(text="last", node=self.node)


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


async def serve(
    registry: MemoryRegistry, handler: Echo, middleware: list[micro.Middleware]
) -> micro.Service:
    svc = micro.Service("echo", registry=registry, middleware=middleware, config=CONFIG)
    handler.node = svc.id
    svc.handle(handler)
    await svc.start()
    return svc


@pytest.fixture
async def services() -> AsyncIterator[list[micro.Service]]:
    """Services to stop after the test."""
    started: list[micro.Service] = []
    yield started
    for svc in started:
        await svc.stop(grace=0)


async def test_hooks_begin_in_order_and_end_in_reverse(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    log: list[str] = []
    services.append(await serve(registry, Streams(), [Log("s1", log), Log("s2", log)]))
    async with micro.Client(registry, middleware=[Log("c1", log), Log("c2", log)]) as client:
        await echo_micro.EchoClient("echo", client).get(echo_pb2.EchoRequest())
    call, handle = "call /echo.v1.Echo/Get unary_unary", "handle /echo.v1.Echo/Get unary_unary"
    assert log == [
        f"c1 {call}",
        f"c2 {call}",
        "c1 attempt 1",
        "c2 attempt 1",
        f"s1 {handle}",
        f"s2 {handle}",
        f"s2 end {handle} OK",
        f"s1 end {handle} OK",
        "c2 end attempt 1 OK",
        "c1 end attempt 1 OK",
        f"c2 end {call} OK",
        f"c1 end {call} OK",
    ]


async def test_handlers_async_and_def_see_what_a_handle_hook_set(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    services.append(await serve(registry, Streams(), [Identity()]))
    async with micro.Client(registry) as client:
        echo = echo_micro.EchoClient("echo", client)
        md = {"x-user": "ada"}
        assert (await echo.get(echo_pb2.EchoRequest(), metadata=md)).text == "ada"
        assert (await echo.put(echo_pb2.EchoRequest(), metadata=md)).text == "ada"  # def
        assert [r.text async for r in echo.watch(echo_pb2.EchoRequest(), metadata=md)] == [
            "ada",
            "last",
        ]
        assert (await echo.get(echo_pb2.EchoRequest())).text == "anonymous"
    assert user.get() == "nobody"  # the server's ending reset it; nothing leaked here


async def test_a_call_hook_adds_metadata_every_attempt_sends_and_its_contextvars_reach_attempts(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    class Caller(micro.Middleware):
        def call(self, call: micro.ClientCall) -> micro.Ending:
            call.metadata.append(("x-user", "grace"))
            token = user.set("grace")
            return lambda outcome: user.reset(token)

        def attempt(self, attempt: micro.ClientAttempt) -> None:
            attempt.metadata.append(("x-attempt", f"{user.get()}-{attempt.number}"))

    handler = Echo()
    services.append(await serve(registry, handler, []))
    async with micro.Client(registry, middleware=[Caller()]) as client:
        reply = await echo_micro.EchoClient("echo", client).get(echo_pb2.EchoRequest())
    assert reply.metadata["x-user"] == "grace"
    assert reply.metadata["x-attempt"] == "grace-1"
    assert user.get() == "nobody"


async def test_a_rejecting_server_hook_is_the_callers_typed_error_never_retried(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    class Deny(micro.Middleware):
        def handle(self, call: micro.ServerCall) -> None:
            raise errors.PermissionDenied(f"no {call.method} for you")

    attempts = Attempts()
    handlers = [Echo(), Echo()]
    for handler in handlers:
        services.append(await serve(registry, handler, [Deny()]))
    async with micro.Client(registry, middleware=[attempts]) as client:
        with pytest.raises(errors.PermissionDenied, match=r"no /echo\.v1\.Echo/Get for you"):
            await echo_micro.EchoClient("echo", client).get(echo_pb2.EchoRequest())
    assert [h.received for h in handlers] == [0, 0]  # no handler ran
    assert len(attempts.seen) == 1  # an idempotent call, yet not retried
    assert attempts.seen[0][1].code is grpc.StatusCode.PERMISSION_DENIED


async def test_a_server_hook_that_breaks_is_internal_without_its_text(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    class Broken(micro.Middleware):
        def handle(self, call: micro.ServerCall) -> None:
            raise RuntimeError("secret-token-123")

    services.append(await serve(registry, Echo(), [Broken()]))
    async with micro.Client(registry) as client:
        with pytest.raises(errors.Internal) as raised:
            await echo_micro.EchoClient("echo", client).get(echo_pb2.EchoRequest())
    assert "secret-token-123" not in str(raised.value)


class RefuseCall(micro.Middleware):
    def call(self, call: micro.ClientCall) -> None:
        raise errors.Unauthenticated("no token")


class RefuseAttempt(micro.Middleware):
    def attempt(self, attempt: micro.ClientAttempt) -> None:
        raise errors.Unauthenticated("no token")


@pytest.mark.parametrize("refuse", [RefuseCall(), RefuseAttempt()], ids=["call", "attempt"])
async def test_a_client_hook_that_raises_a_status_fails_the_call_with_it(
    refuse: micro.Middleware, registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    log: list[str] = []
    handler = Echo()
    services.append(await serve(registry, handler, []))
    async with micro.Client(registry, middleware=[Log("outer", log), refuse]) as client:
        with pytest.raises(errors.Unauthenticated, match="no token"):
            await echo_micro.EchoClient("echo", client).get(echo_pb2.EchoRequest())
    assert handler.received == 0
    assert log[-1] == "outer end call /echo.v1.Echo/Get unary_unary UNAUTHENTICATED"


async def test_a_retry_on_another_node_is_an_attempt_with_its_node_and_why(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    first, second = Echo(), Echo()
    # Whichever node the first attempt reaches fails it and leaves the other healthy.
    first.unavailable = second.unavailable = True
    first.on_arrival = lambda n: setattr(second, "unavailable", False)
    second.on_arrival = lambda n: setattr(first, "unavailable", False)
    for handler in (first, second):
        services.append(await serve(registry, handler, []))
    attempts = Attempts()
    async with micro.Client(registry, middleware=[attempts]) as client:
        reply = await echo_micro.EchoClient("echo", client).get(echo_pb2.EchoRequest())
    ids = {svc.id: svc.address for svc in services}
    (one, failed), (two, succeeded) = attempts.seen
    assert (one.number, one.retry_of, failed.code) == (1, None, UNAVAILABLE)
    assert isinstance(failed.error, errors.Unavailable)
    assert (two.number, two.retry_of, succeeded.code) == (2, UNAVAILABLE, OK)
    assert one.node.id != two.node.id
    assert {one.node.id, two.node.id} == set(ids)
    assert two.node.address == ids[two.node.id]
    assert reply.node == two.node.id
    assert one.call is two.call


async def test_stream_endings_completed_failed_and_cancelled_by_the_client(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    log: list[str] = []
    endings = Endings()
    handler = Streams()
    services.append(await serve(registry, handler, [endings]))
    async with micro.Client(registry, middleware=[Log("c", log)]) as client:
        echo = echo_micro.EchoClient("echo", client)
        watch = "call /echo.v1.Echo/Watch unary_stream"

        assert len([r async for r in echo.watch(echo_pb2.EchoRequest())]) == 2
        assert log[-1] == f"c end {watch} OK"
        assert (await endings.outcomes.get()).code is OK

        with pytest.raises(errors.DataLoss):
            async for _ in echo.watch(echo_pb2.EchoRequest(fail="DATA_LOSS")):
                pass
        assert log[-1] == f"c end {watch} DATA_LOSS"
        assert (await endings.outcomes.get()).code is grpc.StatusCode.DATA_LOSS

        async def read() -> None:
            async for _ in echo.watch(echo_pb2.EchoRequest(text="hold")):
                pass

        reading = asyncio.create_task(read())
        await handler.streaming.wait()  # the first reply sent, the stream waits
        reading.cancel()  # the reader gives up: the call is cancelled
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert log[-1] == f"c end {watch} CANCELLED"
        assert (await endings.outcomes.get()).code is grpc.StatusCode.CANCELLED


async def test_blocking_client_runs_the_same_hooks(
    registry: MemoryRegistry, services: list[micro.Service]
) -> None:
    log: list[str] = []
    services.append(await serve(registry, Streams(), [Identity()]))
    client = micro.Client(registry, middleware=[Log("c", log)])

    def calls() -> tuple[str, list[str]]:
        echo = echo_micro.EchoSyncClient("echo", client)
        md = {"x-user": "ada"}
        reply = echo.put(echo_pb2.EchoRequest(), metadata=md)
        replies: Iterator[echo_pb2.EchoReply] = echo.watch(echo_pb2.EchoRequest(), metadata=md)
        return reply.text, [r.text for r in replies]

    try:
        assert await asyncio.to_thread(calls) == ("ada", ["ada", "last"])
    finally:
        await asyncio.to_thread(client.close_sync)
    put, watch = "call /echo.v1.Echo/Put unary_unary", "call /echo.v1.Echo/Watch unary_stream"
    assert log == [
        f"c {put}",
        "c attempt 1",
        "c end attempt 1 OK",
        f"c end {put} OK",
        f"c {watch}",
        "c attempt 1",
        "c end attempt 1 OK",
        f"c end {watch} OK",
    ]


async def test_a_service_takes_a_ready_server_and_client(registry: MemoryRegistry) -> None:
    server = micro.Server(max_calls=7, middleware=[Identity()])
    client = micro.Client(registry, retries=0)
    svc = micro.Service("echo", registry=registry, server=server, client=client, config=CONFIG)
    svc.handle(Streams())
    await svc.start()
    try:
        assert svc.server is server
        assert svc.client is client
        echo = echo_micro.EchoClient("echo", svc.client)
        assert (await echo.get(echo_pb2.EchoRequest(), metadata={"x-user": "ada"})).text == "ada"
    finally:
        await svc.stop(grace=0)
