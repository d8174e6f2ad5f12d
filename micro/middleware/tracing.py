"""OpenTelemetry tracing: spans after OTel's RPC and messaging conventions.

A client call is a CLIENT span ``pkg.Svc/Method`` with an INTERNAL child per attempt
(which node, which try, why the last one failed: gRPC's A72 shape), and each attempt
sends its own W3C ``traceparent``; the server's SERVER span is its child, current
while the handler runs, so the calls and publishes the handler makes join the trace.
A publish is a PRODUCER span whose context goes in the message headers; a delivery is
a CONSUMER span under it, current while the subscriber runs.

Spans go to the application's global TracerProvider (or the one given): until one is
set, each hook costs one check and records nothing. Needs ``micro-grpc[otel]``.

    trace.set_tracer_provider(TracerProvider())   # the application's, with its exporter
    svc = micro.Service("greeter")                # traced: a Service installs Tracing()
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc

from micro.middleware.base import (
    ClientAttempt,
    ClientCall,
    Ending,
    Incoming,
    Middleware,
    Outcome,
    Outgoing,
    ServerCall,
)

try:
    from opentelemetry import context, propagate, trace
except ImportError:
    raise ImportError(
        "micro.middleware.tracing needs OpenTelemetry: install micro-grpc[otel]"
    ) from None

OK = grpc.StatusCode.OK
# A server's own failures; other codes are the caller's doing (OTel's gRPC conventions).
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


def _records(provider: object) -> bool:
    """Whether ``provider`` records: the ones the API package itself defines (the
    proxy that stands in until the application sets one, the no-op) do not."""
    return not type(provider).__module__.startswith("opentelemetry.trace")


class Tracing(Middleware):
    """Spans for calls, attempts, handlers, publishes and deliveries.

    ``provider``: a TracerProvider to use instead of the global one (tests, or an
    application that keeps its provider to itself).
    """

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer: trace.Tracer | None = None
        self._calls: dict[int, trace.Span] = {}  # id(ClientCall) → its span, while it runs

    def tracer(self) -> trace.Tracer | None:
        """The tracer, once there is a provider that records (set once, so kept)."""
        if self._tracer is None:
            provider = self._provider or trace.get_tracer_provider()
            if not _records(provider):
                return None
            self._tracer = provider.get_tracer("micro")
        return self._tracer

    def call(self, call: ClientCall) -> Ending | None:
        tracer = self._tracer or self.tracer()
        if tracer is None:
            return None
        span = tracer.start_span(
            call.method[1:], kind=trace.SpanKind.CLIENT, attributes=_rpc(call.method)
        )
        key = id(call)
        self._calls[key] = span

        def ended(outcome: Outcome) -> None:
            del self._calls[key]
            _finish(span, outcome, error=outcome.code is not OK)

        return ended

    def attempt(self, attempt: ClientAttempt) -> Ending | None:
        parent = self._calls.get(id(attempt.call))
        if parent is None or self._tracer is None:
            return None
        attributes = {
            **_address("server", attempt.node.address),
            "micro.node.id": attempt.node.id,
            "micro.attempt": attempt.number,
        }
        if attempt.retry_of is not None:
            attributes["micro.retry_of"] = attempt.retry_of.name
        span = self._tracer.start_span(
            f"Attempt.{attempt.call.method[1:]}",
            context=trace.set_span_in_context(parent),
            attributes=attributes,
        )
        # The call's metadata may carry the inbound call's trace keys along: this
        # attempt's own context replaces them.
        metadata = attempt.metadata
        metadata[:] = [(k, v) for k, v in metadata if k not in TRACE_KEYS]
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        metadata.extend(carrier.items())
        return lambda outcome: _finish(span, outcome, error=outcome.code is not OK)

    def handle(self, call: ServerCall) -> Ending | None:
        tracer = self._tracer or self.tracer()
        if tracer is None:
            return None
        attributes = {**_rpc(call.method), **_address("network.peer", call.ctx.peer.address)}
        return _current(
            tracer.start_span(
                call.method[1:],
                # only the trace keys are read, never a -bin (bytes) one
                context=propagate.extract(call.ctx.metadata),
                kind=trace.SpanKind.SERVER,
                attributes=attributes,
            ),
            lambda outcome: outcome.code in SERVER_ERRORS,
        )

    def publish(self, message: Outgoing) -> Ending | None:
        tracer = self._tracer or self.tracer()
        if tracer is None:
            return None
        span = tracer.start_span(
            f"send {message.topic}",
            kind=trace.SpanKind.PRODUCER,
            attributes=_messaging(message.topic, "send"),
        )
        propagate.inject(message.headers, context=trace.set_span_in_context(span))
        return lambda outcome: _finish(span, outcome, error=outcome.error is not None, rpc=False)

    def deliver(self, message: Incoming) -> Ending | None:
        tracer = self._tracer or self.tracer()
        if tracer is None:
            return None
        attributes = _messaging(message.topic, "process")
        attributes["messaging.message.delivery_count"] = message.attempt
        if message.queue:
            attributes["messaging.consumer.group.name"] = message.queue
        span = tracer.start_span(
            f"process {message.topic}",
            context=propagate.extract(message.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
        )

        def failed(outcome: Outcome) -> bool:
            if outcome.disposition is not None:
                span.set_attribute("micro.disposition", outcome.disposition)
            return outcome.error is not None

        return _current(span, failed, rpc=False)


def _current(span: trace.Span, failed: Callable[[Outcome], bool], *, rpc: bool = True) -> Ending:
    """Make ``span`` current (for what runs inside) until the returned ending."""
    token = context.attach(trace.set_span_in_context(span))

    def ended(outcome: Outcome) -> None:
        context.detach(token)
        _finish(span, outcome, error=failed(outcome), rpc=rpc)

    return ended


def _finish(span: trace.Span, outcome: Outcome, *, error: bool, rpc: bool = True) -> None:
    if rpc:
        span.set_attribute("rpc.grpc.status_code", outcome.code.value[0])
    if error:
        if outcome.error is not None:
            span.record_exception(outcome.error)
        span.set_attribute("error.type", outcome.code.name)
        span.set_status(trace.StatusCode.ERROR, outcome.code.name)
    span.end()


# Attributes by method and by address, made once (spans copy what they are given).
@functools.lru_cache(maxsize=1024)
def _rpc(path: str) -> dict[str, Any]:
    service, _, method = path[1:].rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


@functools.lru_cache(maxsize=1024)
def _address(prefix: str, address: str) -> dict[str, Any]:
    """``host:port`` as OTel's ``<prefix>.address`` and ``<prefix>.port``."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return {f"{prefix}.address": address}
    return {f"{prefix}.address": host.strip("[]"), f"{prefix}.port": int(port)}


def _messaging(topic: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "micro",
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
    }
