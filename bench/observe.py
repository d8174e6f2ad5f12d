"""Observability: what tracing and metrics add to a call, against OpenTelemetry's own
gRPC instrumentation doing the same tracing on raw grpc.aio.

Client and server share one process and one loop, so CPU per call is both sides'
(grpc's threads included). Seven variants, interleaved rounds (``bench.load``):
raw grpc.aio; raw with ``opentelemetry-instrumentation-grpc``'s client and server
interceptors; micro (a ``micro.Server`` and a direct ``micro.Client``, no middleware);
micro with the ``Tracing`` and ``Metrics`` a Service installs, before any provider is
set (idle: what having the otel extra costs); micro with ``Tracing`` recording, with
``Metrics`` recording (OpenTelemetry and Prometheus), and with both. Both traced
variants record every span through the same SDK TracerProvider (a processor that
drops finished spans: exporting is not what is measured). The figure: micro's added
CPU per call (traced minus plain micro) over the instrumentation's (traced minus
raw); the goal is at most one half.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import grpc
import grpc.aio
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import micro
from bench import greeter, load
from bench.greeter_server import handler
from micro.middleware.metrics import Metrics
from micro.middleware.tracing import Tracing

RAW, INSTRUMENTED = "raw", "raw+otel-instrumentation"
MICRO, IDLE, OBSERVED = "micro", "micro+observe-idle", "micro+observe"
TRACED, COUNTED = "micro+tracing", "micro+metrics"  # the two parts of micro+observe
GOAL = 0.5  # micro's added cost over the instrumentation's, at most


def settings_for(quick: bool) -> load.Settings:
    if quick:
        return load.Settings(rounds=3, round_s=0.1, warmup_s=0.05, concurrency=(1,))
    return load.Settings(rounds=8, round_s=0.35, warmup_s=0.2, concurrency=(1, 16))


class Dropped(SpanExporter):
    """Takes finished spans and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _raw_server(generated: greeter.Greeter, interceptors: Sequence[Any]) -> tuple[Any, str]:
    reply = generated.pb2.HelloReply

    async def say_hello(request: Any, context: Any) -> Any:
        return reply(message=request.name, node="raw")

    method = grpc.unary_unary_rpc_method_handler(
        say_hello,
        request_deserializer=generated.pb2.HelloRequest.FromString,
        response_serializer=reply.SerializeToString,
    )
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("greeter.v1.Greeter", {"SayHello": method}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def compare(
    generated: greeter.Greeter, settings: load.Settings, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Dropped()))
    meters = MeterProvider()
    tracing, metrics = Tracing(provider), Metrics(prometheus=True, meter_provider=meters)
    variants: dict[str, list[micro.Middleware]] = {
        MICRO: [],
        # what a Service installs by itself, before the application sets any provider
        IDLE: [Tracing(), Metrics()],
        TRACED: [tracing],
        COUNTED: [metrics],
        OBSERVED: [tracing, metrics],
    }
    pb2 = generated.pb2
    request = pb2.HelloRequest(name="bench")

    raw_server, raw_address = await _raw_server(generated, ())
    otel_server, otel_address = await _raw_server(
        generated,
        [aio_server_interceptor(provider)],  # type: ignore[no-untyped-call]
    )
    servers = {
        name: micro.Server("127.0.0.1:0", health=False, reflection=False, middleware=hooks)
        for name, hooks in variants.items()
    }
    for server in servers.values():
        server.add(handler(generated, "micro"))
    addresses = {name: await server.start() for name, server in servers.items()}
    channels = [
        grpc.aio.insecure_channel(raw_address),
        grpc.aio.insecure_channel(
            otel_address,
            interceptors=aio_client_interceptors(provider),  # type: ignore[no-untyped-call]
        ),
    ]
    clients = {name: micro.Client(middleware=hooks) for name, hooks in variants.items()}

    def raw_call(channel: grpc.aio.Channel) -> load.AsyncCall:
        call: load.AsyncCall = channel.unary_unary(
            greeter.SAY_HELLO,
            request_serializer=pb2.HelloRequest.SerializeToString,
            response_deserializer=pb2.HelloReply.FromString,
        )
        return call

    def micro_call(client: micro.Client, address: str) -> load.AsyncCall:
        options = micro.CallOptions(address=address)
        stub = generated.micro.GreeterClient("greeter", client, options=options)
        call: load.AsyncCall = stub.say_hello
        return call

    calls = {
        RAW: raw_call(channels[0]),
        INSTRUMENTED: raw_call(channels[1]),
        **{name: micro_call(clients[name], addresses[name]) for name in variants},
    }
    results = []
    try:
        for concurrency in settings.concurrency:
            log(f"observe: async unary, concurrency {concurrency}")
            rounds = await load.interleaved(calls, request, concurrency, settings)
            results.append(summarise(concurrency, rounds))
    finally:
        for client in clients.values():
            await client.close()
        for channel in channels:
            await channel.close(grace=None)
        for server in servers.values():
            await server.stop(None)
        for raw in (raw_server, otel_server):
            await raw.stop(None)
        provider.shutdown()
        meters.shutdown()
    return results


def summarise(concurrency: int, rounds: dict[str, list[load.Round]]) -> dict[str, Any]:
    """Each variant's figures; the added CPU per call of each traced variant against
    its untraced one, round by round, and their ratio."""
    instrumentation = load.versus(rounds[RAW], rounds[INSTRUMENTED])
    added = {name: load.versus(rounds[MICRO], rounds[name]) for name in (IDLE, TRACED, COUNTED)}
    observe = load.versus(rounds[MICRO], rounds[OBSERVED])
    added_otel = instrumentation["overhead_cpu_us"]["median"]
    added_micro = observe["overhead_cpu_us"]["median"]
    ratio = added_micro / added_otel if added_otel > 0 else None
    return {
        "concurrency": concurrency,
        "variants": {name: load.variant_stats(measured) for name, measured in rounds.items()},
        "instrumentation_vs_raw": instrumentation,
        "observe_vs_micro": observe,
        "micro_vs_raw": load.versus(rounds[RAW], rounds[MICRO]),
        "parts_vs_micro": added,
        "added_cpu_ratio": ratio,
        "meets_goal": None if ratio is None else ratio <= GOAL,
    }


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = settings_for(quick)
    results = asyncio.run(compare(greeter.load(), settings, log))
    return {"settings": asdict(settings), "goal": GOAL, "results": results}
