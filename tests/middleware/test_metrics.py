"""Metrics: the Prometheus series a Service serves on MICRO_METRICS_ADDRESS, read by a
real Prometheus and from ``/metrics`` itself; the OpenTelemetry instruments through
the SDK's in-memory reader."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import echo_micro
import echo_pb2
import grpc
import prometheus_support
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from prometheus_client.parser import text_string_to_metric_families
from runtime_support import Echo

import micro
from micro import errors
from micro.broker.memory import MemoryBroker
from micro.middleware.metrics import Metrics
from micro.registry import MemoryRegistry

CONFIG = micro.Config(registry="memory", metrics_address="127.0.0.1:0")
GET, PUT = "/echo.v1.Echo/Get", "/echo.v1.Echo/Put"


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def serve(
    stack: AsyncExitStack, name: str, registry: MemoryRegistry
) -> tuple[micro.Service, Echo]:
    svc = micro.Service(name, registry=registry, config=CONFIG)
    handler = Echo(svc.id, svc.client)
    svc.handle(handler)
    await svc.start()
    stack.push_async_callback(svc.stop, 0)
    return svc, handler


def scrape(svc: micro.Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the service's ``/metrics`` says now: (sample name, sorted labels) → value."""
    assert svc.metrics is not None
    with urllib.request.urlopen(f"http://{svc.metrics.address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.backend
async def test_prometheus_counts_calls_per_method_and_code(
    stack: AsyncExitStack, tmp_path: Path
) -> None:
    registry = MemoryRegistry()
    back, _ = await serve(stack, "back", registry)
    front, _ = await serve(stack, "front", registry)
    client = micro.Client(registry, config=CONFIG)
    stack.push_async_callback(client.close)
    echo = echo_micro.EchoClient("front", client)
    for _ in range(3):
        await echo.get(echo_pb2.EchoRequest(hops=["back"]))
    for _ in range(2):
        with pytest.raises(errors.NotFound):
            await echo.put(echo_pb2.EchoRequest(hops=["back"], fail="NOT_FOUND"))
    assert front.metrics is not None
    assert back.metrics is not None
    called = time.time()

    targets = [front.metrics.address, back.metrics.address]
    with prometheus_support.running(tmp_path, targets) as prometheus:
        await asyncio.to_thread(prometheus.scraped, called)
        served = await asyncio.to_thread(prometheus.query, "micro_server_requests_total")
        made = await asyncio.to_thread(prometheus.query, "micro_client_requests_total")
        timed = await asyncio.to_thread(
            prometheus.query,
            "sum by (service) (micro_server_request_duration_seconds_count)",
        )
        inflight = await asyncio.to_thread(prometheus.query, "sum(micro_server_inflight)")

    def labels(service: str, method: str, code: str) -> tuple[tuple[str, str], ...]:
        return (("code", code), ("method", method), ("service", service))

    assert served == {
        labels("front", GET, "OK"): 3,
        labels("front", PUT, "NOT_FOUND"): 2,  # front's handler passes back's status on
        labels("back", GET, "OK"): 3,
        labels("back", GET, "NOT_FOUND"): 2,  # front calls back's Get for either
    }
    assert made == {labels("back", GET, "OK"): 3, labels("back", GET, "NOT_FOUND"): 2}
    assert timed == {(("service", "front"),): 5, (("service", "back"),): 5}
    assert inflight == {(): 0}


async def test_retries_and_ejections_are_counted(stack: AsyncExitStack) -> None:
    registry = MemoryRegistry()
    nodes = [await serve(stack, "echo", registry) for _ in range(2)]
    for _, handler in nodes:
        handler.unavailable = True
    caller, _ = await serve(stack, "caller", registry)
    before = scrape(caller)
    with pytest.raises(errors.Unavailable):
        await echo_micro.EchoClient("echo", caller.client).get(echo_pb2.EchoRequest())
    after = scrape(caller)

    attempts = sum(handler.received for _, handler in nodes)
    assert attempts >= 2
    call = (("method", GET), ("service", "echo"))
    assert after[("micro_client_retries_total", call)] == attempts - 1
    code = (("code", "UNAVAILABLE"), *call)
    assert after[("micro_client_requests_total", code)] == 1
    ejections = "micro_client_ejections_total", ()
    # two failures in a row eject a node; a retry goes to another node first
    assert after[ejections] - before[ejections] == attempts // 2


class Settled(micro.Middleware):
    """``done`` once ``count`` deliveries ended for good (acked or dead-lettered).
    Given before Metrics, its endings run after Metrics' (endings run in reverse), so
    the counts are in by then."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()

    def deliver(self, message: micro.Incoming) -> micro.Ending:
        def ended(outcome: micro.Outcome) -> None:
            if outcome.disposition != "retried":
                self.left -= 1
                if self.left == 0:
                    self.done.set()

        return ended


async def test_deliveries_are_counted_by_outcome(stack: AsyncExitStack) -> None:
    broker = MemoryBroker(max_attempts=2, backoff=0.001)
    settled = Settled(2)
    metrics = Metrics(prometheus=True)
    svc = micro.Service(
        "billing",
        registry=MemoryRegistry(),
        broker=broker,
        config=CONFIG,
        middleware=[settled, metrics],
    )
    assert svc.metrics is metrics  # the one given is the one served

    @svc.subscribe("orders")
    async def on_order(event: StringValue, ctx: micro.EventContext) -> None:
        if event.value == "once" and ctx.attempt == 1:
            raise RuntimeError("fails on its first delivery")
        if event.value == "never":
            raise RuntimeError("always fails")

    await svc.start()
    stack.push_async_callback(svc.stop, 0)
    publisher = svc.publisher("orders", StringValue)
    for value in ("once", "never"):
        await publisher.publish(StringValue(value=value))
    await asyncio.wait_for(settled.done.wait(), 30)  # a generous bound on a loaded machine
    found = scrape(svc)

    handled = {
        dict(labels)["outcome"]: value
        for (name, labels), value in found.items()
        if name == "micro_broker_handled_total"
    }
    assert handled == {"retried": 2, "acked": 1, "dead-lettered": 1}
    assert found[("micro_broker_published_total", (("topic", "orders"),))] == 2


async def test_opentelemetry_call_durations_and_messages() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics(meter_provider=provider)
    svc = micro.Service(
        "echo",
        registry=MemoryRegistry(),
        broker=MemoryBroker(),
        config=micro.Config(registry="memory"),
        middleware=[metrics],
    )
    svc.handle(Echo(svc.id))
    delivered = asyncio.Event()

    @svc.subscribe("orders")
    async def on_order(event: StringValue, ctx: micro.EventContext) -> None:
        delivered.set()

    await svc.start()
    try:
        echo = echo_micro.EchoClient("echo", svc.client)
        await echo.get(echo_pb2.EchoRequest())
        with pytest.raises(errors.NotFound):
            await echo.put(echo_pb2.EchoRequest(fail="NOT_FOUND"))
        await svc.publisher("orders", StringValue).publish(StringValue(value="1"))
        await asyncio.wait_for(delivered.wait(), 30)  # generous, for a loaded machine
    finally:
        await svc.stop(grace=0)  # returns once the delivery has ended, and been counted

    data = reader.get_metrics_data()
    assert data is not None
    found = [
        (m.name, p)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    ]
    calls = {
        (name, p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.count
        for name, p in found
        if name.startswith("rpc.") and isinstance(p, HistogramDataPoint) and p.attributes
    }
    ok, not_found = grpc.StatusCode.OK.value[0], grpc.StatusCode.NOT_FOUND.value[0]
    assert calls == {
        ("rpc.client.call.duration", "Get", ok): 1,
        ("rpc.client.call.duration", "Put", not_found): 1,
        ("rpc.server.call.duration", "Get", ok): 1,
        ("rpc.server.call.duration", "Put", not_found): 1,
    }
    messages = {
        name: (dict(p.attributes or {}), p) for name, p in found if name.startswith("messaging.")
    }
    sent_attributes, sent = messages["messaging.client.sent.messages"]
    assert sent_attributes == {"messaging.destination.name": "orders"}
    assert isinstance(sent, NumberDataPoint)
    assert sent.value == 1
    processed_attributes, processed = messages["messaging.process.duration"]
    assert processed_attributes == {
        "messaging.destination.name": "orders",
        "micro.disposition": "acked",
    }
    assert isinstance(processed, HistogramDataPoint)
    assert processed.count == 1
    provider.shutdown()
