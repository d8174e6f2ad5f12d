"""Tracing against the real OpenTelemetry SDK: the span tree of calls through two
services, retries, statuses, publish and delivery over memory and NATS."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import echo_micro
import echo_pb2
import grpc
import pytest
import redis_fixture
from google.protobuf.wrappers_pb2 import StringValue
from nats_support import running
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runtime_support import Echo

import micro
from micro import errors
from micro.broker import Broker
from micro.broker.memory import MemoryBroker
from micro.middleware.tracing import Tracing
from micro.registry import MemoryRegistry

CONFIG = micro.Config(registry="memory", client_retries=3)
GET = "echo.v1.Echo/Get"
CLIENT, SERVER, INTERNAL = trace.SpanKind.CLIENT, trace.SpanKind.SERVER, trace.SpanKind.INTERNAL


class Spans(InMemorySpanExporter):
    """Finished spans, and a way to await them: a span may end after the event a test
    awaited (a delivery's, once its handler returned)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.changed = asyncio.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        self.loop.call_soon_threadsafe(self.changed.set)
        return result

    async def wait(self, count: int) -> tuple[ReadableSpan, ...]:
        """At least ``count`` finished spans; 30 s is far beyond a loaded delivery."""
        while True:
            self.changed.clear()
            spans = self.get_finished_spans()
            if len(spans) >= count:
                return spans
            await asyncio.wait_for(self.changed.wait(), 30)


@pytest.fixture
async def exporter() -> Spans:
    return Spans(asyncio.get_running_loop())


@pytest.fixture
def tracing(exporter: Spans) -> Iterator[Tracing]:
    """Tracing into ``exporter``, through a provider of the test's own (the global one
    is set once per process)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider)
    provider.shutdown()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def serve(
    stack: AsyncExitStack, name: str, registry: MemoryRegistry, tracing: Tracing
) -> tuple[micro.Service, Echo]:
    svc = micro.Service(name, registry=registry, config=CONFIG, middleware=[tracing])
    handler = Echo(svc.id, svc.client)
    svc.handle(handler)
    await svc.start()
    stack.push_async_callback(svc.stop, 0)
    return svc, handler


async def client(stack: AsyncExitStack, registry: MemoryRegistry, tracing: Tracing) -> micro.Client:
    c = micro.Client(registry, middleware=[tracing], config=CONFIG)
    stack.push_async_callback(c.close)
    return c


def tree(spans: tuple[ReadableSpan, ...]) -> list[tuple[int, str, trace.SpanKind]]:
    """The spans as (depth, name, kind), parents before children, in start order."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)
    known = {s.context.span_id for s in spans if s.context is not None}
    roots = [s for p, kids in children.items() if p is None or p not in known for s in kids]
    out: list[tuple[int, str, trace.SpanKind]] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        out.append((depth, span.name, span.kind))
        assert span.context is not None
        for child in children.get(span.context.span_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return out


async def test_a_call_through_two_services_is_one_trace(
    stack: AsyncExitStack, exporter: Spans, tracing: Tracing
) -> None:
    registry = MemoryRegistry()
    await serve(stack, "front", registry, tracing)
    await serve(stack, "back", registry, tracing)
    echo = echo_micro.EchoClient("front", await client(stack, registry, tracing))
    reply = await echo.get(echo_pb2.EchoRequest(text="hi", hops=["back"]))

    spans = exporter.get_finished_spans()
    assert tree(spans) == [
        (0, GET, CLIENT),
        (1, f"Attempt.{GET}", INTERNAL),
        (2, GET, SERVER),  # front
        (3, GET, CLIENT),  # front's call on to back
        (4, f"Attempt.{GET}", INTERNAL),
        (5, GET, SERVER),  # back
    ]
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    # back saw the traceparent of the attempt that reached it, not front's inbound one
    # (which front's context passes along too)
    _front, back = sorted((s for s in spans if s.kind is SERVER), key=lambda s: s.start_time or 0)
    assert back.parent is not None
    assert reply.metadata["traceparent"].split("-")[2] == format(back.parent.span_id, "016x")
    server = back
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "echo.v1.Echo"
    assert server.attributes["rpc.method"] == "Get"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["network.peer.address"] == "127.0.0.1"  # front, calling
    assert all(s.status.status_code is trace.StatusCode.UNSET for s in spans)


async def test_blocking_calls_and_streams_are_traced_alike(
    stack: AsyncExitStack, exporter: Spans, tracing: Tracing
) -> None:
    registry = MemoryRegistry()
    await serve(stack, "echo", registry, tracing)
    blocking = micro.Client(registry, middleware=[tracing], config=CONFIG)
    stack.push_async_callback(asyncio.to_thread, blocking.close_sync)

    def calls() -> list[str]:
        echo = echo_micro.EchoSyncClient("echo", blocking)
        echo.get(echo_pb2.EchoRequest())
        return [r.text for r in echo.watch(echo_pb2.EchoRequest(text="w"))]

    assert await asyncio.to_thread(calls) == ["w0", "w1", "w2"]
    watch = "echo.v1.Echo/Watch"
    assert tree(await exporter.wait(6)) == [
        (0, GET, CLIENT),
        (1, f"Attempt.{GET}", INTERNAL),
        (2, GET, SERVER),
        (0, watch, CLIENT),  # a stream's spans end when it does
        (1, f"Attempt.{watch}", INTERNAL),
        (2, watch, SERVER),
    ]


async def test_attempts_show_node_number_and_why_retried(
    stack: AsyncExitStack, exporter: Spans, tracing: Tracing
) -> None:
    registry = MemoryRegistry()
    nodes = [await serve(stack, "echo", registry, tracing) for _ in range(2)]
    for _, handler in nodes:
        handler.unavailable = True  # every attempt fails, so the call retries to the end
    echo = echo_micro.EchoClient("echo", await client(stack, registry, tracing))
    with pytest.raises(errors.Unavailable):
        await echo.get(echo_pb2.EchoRequest(text="hi"))

    spans = exporter.get_finished_spans()
    call = next(s for s in spans if s.kind is CLIENT)

    def number(span: ReadableSpan) -> int:
        value = (span.attributes or {}).get("micro.attempt")
        assert isinstance(value, int)
        return value

    attempts = sorted((s for s in spans if s.name.startswith("Attempt")), key=number)
    assert len(attempts) >= 2
    first, second = (a.attributes or {} for a in attempts[:2])
    assert [number(a) for a in attempts] == list(range(1, len(attempts) + 1))
    assert "micro.retry_of" not in first
    assert second["micro.retry_of"] == "UNAVAILABLE"
    assert first["micro.node.id"] != second["micro.node.id"]  # a retry prefers another node
    assert {first["micro.node.id"], second["micro.node.id"]} == {svc.id for svc, _ in nodes}
    assert first["server.address"] == "127.0.0.1"
    assert call.status.status_code is trace.StatusCode.ERROR
    assert all(a.status.status_code is trace.StatusCode.ERROR for a in attempts)
    assert call.attributes
    assert call.attributes["rpc.grpc.status_code"] == 14
    assert any(e.name == "exception" for e in call.events)


@pytest.mark.parametrize(
    ("code", "server_error"),
    [(grpc.StatusCode.NOT_FOUND, False), (grpc.StatusCode.INTERNAL, True)],
)
async def test_a_server_span_is_an_error_only_for_the_servers_failures(
    stack: AsyncExitStack,
    exporter: Spans,
    tracing: Tracing,
    code: grpc.StatusCode,
    server_error: bool,
) -> None:
    registry = MemoryRegistry()
    await serve(stack, "echo", registry, tracing)
    echo = echo_micro.EchoClient("echo", await client(stack, registry, tracing))
    with pytest.raises(errors.Error) as failed:
        await echo.put(echo_pb2.EchoRequest(fail=code.name))
    assert failed.value.code is code

    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind is SERVER)
    client_span = next(s for s in spans if s.kind is CLIENT)
    assert server.attributes
    assert server.attributes["rpc.grpc.status_code"] == code.value[0]
    assert (server.status.status_code is trace.StatusCode.ERROR) is server_error
    assert client_span.status.status_code is trace.StatusCode.ERROR  # the caller's: any failure


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(params=["memory", "grpc", "nats", "redis", "rabbitmq"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker | None]:
    """Each backend (None: the Service's own grpc peer broker), on a server of the
    test's own where the suite starts one (RabbitMQ: the one on 127.0.0.1:5672, on an
    exchange of the test's own)."""
    if request.param in ("memory", "grpc"):
        yield MemoryBroker() if request.param == "memory" else None
    elif request.param == "nats":
        from micro.broker.nats import NatsBroker

        with running(tmp_path) as server:
            nats = NatsBroker(server.url)
            yield nats
            await nats.close()
    elif request.param == "redis":
        from micro.broker.redis import RedisBroker

        if not redis_fixture.available():
            pytest.skip("redis-server is missing (make backends installs it)")
        with redis_fixture.redis_server() as url:
            redis = RedisBroker(url)
            yield redis
            await redis.close()
    else:
        import aio_pika

        from micro.broker.rabbitmq import RabbitBroker

        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 5672)) != 0:
                pytest.skip("no RabbitMQ on 127.0.0.1:5672 (make backends starts one)")
        exchange = f"micro-test-{uuid.uuid4().hex[:12]}"
        rabbit = RabbitBroker(RABBITMQ, exchange=exchange)
        yield rabbit
        await rabbit.close()
        connection = await aio_pika.connect(RABBITMQ)
        channel = await connection.channel()
        for queue in ("user.created.billing", "user.created.dlq.billing"):
            await channel.queue_delete(f"{exchange}.{queue}")
        await channel.exchange_delete(exchange)
        await connection.close()


@pytest.mark.backend
async def test_publish_and_delivery_join_the_publishers_trace(
    stack: AsyncExitStack, exporter: Spans, tracing: Tracing, broker: Broker | None
) -> None:
    registry = MemoryRegistry()
    svc = micro.Service(
        "billing", registry=registry, broker=broker, config=CONFIG, middleware=[tracing]
    )
    delivered = asyncio.Event()
    seen: list[trace.SpanContext] = []

    @svc.subscribe("user.created", queue="billing")
    async def on_created(event: StringValue, ctx: micro.EventContext) -> None:
        seen.append(trace.get_current_span().get_span_context())
        delivered.set()

    await svc.start()
    stack.push_async_callback(svc.stop, 0)
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("signup"):
        await svc.publisher("user.created", StringValue).publish(StringValue(value="42"))
    await asyncio.wait_for(delivered.wait(), 30)  # a generous bound for a loaded machine

    await svc.stop(grace=0)  # returns once the delivery, and so its span, has ended
    spans = exporter.get_finished_spans()
    [signup] = [s for s in spans if s.name == "signup"]
    [producer] = [s for s in spans if s.kind is trace.SpanKind.PRODUCER]
    [consumer] = [s for s in spans if s.kind is trace.SpanKind.CONSUMER]
    assert (producer.name, consumer.name) == ("send user.created", "process user.created")
    assert signup.context is not None
    assert producer.context is not None
    assert producer.parent is not None
    assert producer.parent.span_id == signup.context.span_id
    assert consumer.parent is not None  # through the message's headers:
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context is not None
    assert consumer.context.trace_id == signup.context.trace_id
    assert seen == [consumer.context]  # current while the subscriber ran
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.destination.name"] == "user.created"
    assert consumer.attributes["messaging.consumer.group.name"] == "billing"
    assert consumer.attributes["micro.disposition"] == "acked"


class TraceMethods:
    """opentelemetry-proto's TraceService, as ``micro gen`` writes a service's
    descriptors (the wheel ships its _pb2 modules, not its .proto files)."""

    export = micro.UnaryUnary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )


class Receiver(micro.Handler):
    """An OTLP trace receiver: keeps the spans exported to it."""

    __service__ = micro.ServiceDescriptor(
        "opentelemetry.proto.collector.trace.v1.TraceService", TraceMethods
    )

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def export(
        self, request: ExportTraceServiceRequest, ctx: micro.Context
    ) -> ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return ExportTraceServiceResponse()


async def test_a_trace_reaches_an_otlp_receiver_over_the_wire(stack: AsyncExitStack) -> None:
    """Calls through two services and a publish and delivery, exported by the SDK's OTLP
    gRPC exporter to a receiver micro serves: one trace, the right tree."""
    receiver = Receiver()
    collector = micro.Server("127.0.0.1:0")
    collector.add(receiver)
    address = await collector.start()
    stack.push_async_callback(collector.stop, 0)
    provider = TracerProvider()
    # a batch processor exports from its own thread: a synchronous export from this
    # event loop's thread would block the receiver it waits for
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(address, insecure=True)))
    tracing = Tracing(provider)
    registry = MemoryRegistry()
    await serve(stack, "front", registry, tracing)
    back = micro.Service(
        "back", registry=registry, broker=MemoryBroker(), config=CONFIG, middleware=[tracing]
    )
    back.handle(Echo(back.id, back.client))
    delivered = asyncio.Event()

    @back.subscribe("orders")
    async def on_order(event: StringValue, ctx: micro.EventContext) -> None:
        delivered.set()

    await back.start()
    stack.push_async_callback(back.stop, 0)
    echo = echo_micro.EchoClient("front", await client(stack, registry, tracing))
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("checkout"):
        await echo.get(echo_pb2.EchoRequest(hops=["back"]))
        await back.publisher("orders", StringValue).publish(StringValue(value="1"))
    await asyncio.wait_for(delivered.wait(), 30)  # generous, for a loaded machine
    await back.stop(grace=0)  # returns once the delivery (and so its span) has ended
    assert await asyncio.to_thread(provider.force_flush, 30_000)
    provider.shutdown()

    spans = receiver.spans
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    depth: dict[bytes, int] = {}
    for s in sorted(spans, key=lambda s: s.start_time_unix_nano):
        depth[s.span_id] = depth[s.parent_span_id] + 1 if s.parent_span_id in by_id else 0
    shown = sorted((depth[s.span_id], s.name, s.kind) for s in spans)
    Kind = Span.SpanKind
    assert shown == sorted(
        [
            (0, "checkout", Kind.SPAN_KIND_INTERNAL),
            (1, GET, Kind.SPAN_KIND_CLIENT),
            (2, f"Attempt.{GET}", Kind.SPAN_KIND_INTERNAL),
            (3, GET, Kind.SPAN_KIND_SERVER),
            (4, GET, Kind.SPAN_KIND_CLIENT),
            (5, f"Attempt.{GET}", Kind.SPAN_KIND_INTERNAL),
            (6, GET, Kind.SPAN_KIND_SERVER),
            (1, "send orders", Kind.SPAN_KIND_PRODUCER),
            (2, "process orders", Kind.SPAN_KIND_CONSUMER),
        ]
    )
