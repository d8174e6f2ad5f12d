"""Metrics of calls, handlers and messages: OpenTelemetry and Prometheus.

OpenTelemetry: ``rpc.client.call.duration`` and ``rpc.server.call.duration`` (seconds,
by ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``),
``messaging.client.sent.messages`` and ``messaging.process.duration`` through the
application's global MeterProvider (or the one given); until one is set they cost
one check. Prometheus (``prometheus=True``; ``micro-grpc[prometheus]``): the
``micro_*`` series below in a registry of this object's own, which ``serve`` exposes
as ``/metrics`` (a Service does, on ``MICRO_METRICS_ADDRESS``).

    metrics = Metrics(prometheus=True)
    client = micro.Client(registry, middleware=[metrics])
    metrics.serve("127.0.0.1:9464")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc

from micro.config import host_port
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
from micro.selector import NodeHealth

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.metrics import MeterProvider
    from prometheus_client import CollectorRegistry

try:
    from opentelemetry import metrics as otel
except ImportError:  # optional here: Prometheus alone needs no OpenTelemetry
    otel = None  # type: ignore[assignment]


class Metrics(Middleware):
    """Counts and times client calls, server calls, publishes and deliveries.

    ``prometheus``: also keep the ``micro_*`` Prometheus series (``registry``).
    ``service``: the ``service`` label of calls served here (a Service gives its
    name); else each call's proto service. ``meter_provider``: instead of the global.
    """

    def __init__(
        self,
        *,
        prometheus: bool = False,
        service: str | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.service = service
        self.prometheus = _Prometheus() if prometheus else None
        self.registry = None if self.prometheus is None else self.prometheus.registry
        self._meter_provider = meter_provider
        self._otel: _Otel | None = None
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def meters(self) -> _Otel | None:
        """The OpenTelemetry instruments, once a MeterProvider that records is set."""
        if self._otel is None and otel is not None:
            provider = self._meter_provider or otel.get_meter_provider()
            if type(provider).__module__.startswith("opentelemetry.metrics"):
                return None  # the API's own proxy or no-op: nothing set yet
            self._otel = _Otel(provider)
        return self._otel

    def call(self, call: ClientCall) -> Ending | None:
        meters, series = self._otel or self.meters(), self.prometheus
        if meters is None and series is None:
            return None
        began = time.perf_counter()

        def ended(outcome: Outcome) -> None:
            seconds = time.perf_counter() - began
            if series is not None:
                series.client(call.service, call.method, outcome.code, seconds)
            if meters is not None:
                meters.client.record(seconds, meters.attributes(call.method, outcome.code))

        return ended

    def attempt(self, attempt: ClientAttempt) -> Ending | None:
        if attempt.number > 1 and self.prometheus is not None:
            series = self.prometheus
            series.child(series.retries, attempt.call.service, attempt.call.method).inc()
        return None

    def handle(self, call: ServerCall) -> Ending | None:
        meters, series = self._otel or self.meters(), self.prometheus
        if meters is None and series is None:
            return None
        service = self.service or call.service
        inflight = None if series is None else series.child(series.inflight, service, call.method)
        if inflight is not None:
            inflight.inc()
        began = time.perf_counter()

        def ended(outcome: Outcome) -> None:
            seconds = time.perf_counter() - began
            if series is not None and inflight is not None:
                inflight.dec()
                series.server(service, call.method, outcome.code, seconds)
            if meters is not None:
                meters.server.record(seconds, meters.attributes(call.method, outcome.code))

        return ended

    def publish(self, message: Outgoing) -> Ending | None:
        meters, series = self._otel or self.meters(), self.prometheus
        if meters is None and series is None:
            return None

        def ended(outcome: Outcome) -> None:
            if outcome.error is not None:
                return
            if series is not None:
                series.child(series.published, message.topic).inc()
            if meters is not None:
                meters.sent.add(1, {"messaging.destination.name": message.topic})

        return ended

    def deliver(self, message: Incoming) -> Ending | None:
        meters, series = self._otel or self.meters(), self.prometheus
        if meters is None and series is None:
            return None
        began = time.perf_counter()

        def ended(outcome: Outcome) -> None:
            seconds = time.perf_counter() - began
            disposition = outcome.disposition or ("acked" if outcome.error is None else "retried")
            if series is not None:
                series.child(series.handled, message.topic, disposition).inc()
            if meters is not None:
                attributes = {
                    "messaging.destination.name": message.topic,
                    "micro.disposition": disposition,
                }
                meters.process.record(seconds, attributes)

        return ended

    def serve(self, address: str) -> str:
        """Serve ``/metrics`` on ``address`` (``host:port``; port 0 picks one) from a
        thread; returns the address bound. ``close`` stops it."""
        if self.registry is None:
            raise ValueError("Metrics.serve: made without prometheus=True, so nothing to serve")
        if self._http is not None:
            raise RuntimeError(f"Metrics.serve: already serving on {self.address}")
        from prometheus_client import start_http_server

        host, port = host_port(address)
        self._http = start_http_server(port or 0, host.strip("[]"), self.registry)
        return self.address

    @property
    def address(self) -> str:
        """Where ``/metrics`` is served ("" when it is not)."""
        if self._http is None:
            return ""
        bound, port = self._http[0].server_address[:2]
        host = bound.decode() if isinstance(bound, bytes) else bound
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        """Stop serving ``/metrics`` (blocks up to the HTTP server's half-second poll)."""
        if self._http is not None:
            server, thread = self._http
            self._http = None
            server.shutdown()
            server.server_close()
            thread.join()


class _Otel:
    """The OpenTelemetry instruments (OTel's RPC and messaging conventions)."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("micro")
        self.client = meter.create_histogram(
            "rpc.client.call.duration", unit="s", description="Client calls, all attempts"
        )
        self.server = meter.create_histogram(
            "rpc.server.call.duration", unit="s", description="Calls served"
        )
        self.sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Messages published"
        )
        self.process = meter.create_histogram(
            "messaging.process.duration", unit="s", description="Deliveries to subscribers"
        )
        self._attributes: dict[tuple[str, grpc.StatusCode], dict[str, Any]] = {}

    def attributes(self, path: str, code: grpc.StatusCode) -> dict[str, Any]:
        """A call's attributes, made once per method and code (the SDK copies them)."""
        found = self._attributes.get((path, code))
        if found is None:
            service, _, method = path[1:].rpartition("/")
            found = self._attributes[path, code] = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": method,
                "rpc.grpc.status_code": code.value[0],
            }
        return found


class _Prometheus:
    """The ``micro_*`` series, in a registry of their own."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise ImportError("Prometheus metrics need micro-grpc[prometheus]") from None
        self.registry: CollectorRegistry = CollectorRegistry()
        call = ["service", "method"]
        r = self.registry
        self.server_requests = Counter(
            "micro_server_requests", "Calls served, by status code", [*call, "code"], registry=r
        )
        self.server_duration = Histogram(
            "micro_server_request_duration_seconds", "Time to serve a call", call, registry=r
        )
        self.inflight = Gauge("micro_server_inflight", "Calls being served", call, registry=r)
        self.client_requests = Counter(
            "micro_client_requests", "Calls made, by final status", [*call, "code"], registry=r
        )
        self.client_duration = Histogram(
            "micro_client_request_duration_seconds",
            "Time a call took, all attempts",
            call,
            registry=r,
        )
        self.retries = Counter("micro_client_retries", "Attempts after the first", call, registry=r)
        self.published = Counter(
            "micro_broker_published", "Messages published", ["topic"], registry=r
        )
        self.handled = Counter(
            "micro_broker_handled",
            "Deliveries handled: acked, retried or dead-lettered",
            ["topic", "outcome"],
            registry=r,
        )
        r.register(_Ejections())
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up there once (it takes a lock each time)."""
        key = id(metric), labels
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def client(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.child(self.client_requests, service, method, code.name).inc()
        self.child(self.client_duration, service, method).observe(seconds)

    def server(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.child(self.server_requests, service, method, code.name).inc()
        self.child(self.server_duration, service, method).observe(seconds)


class _Ejections:
    """``micro_client_ejections_total``: nodes the clients of this process ejected,
    read from the count the selector's ``NodeHealth`` keeps anyway (no hook)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(
            "micro_client_ejections",
            "Nodes ejected after repeated failures (this process)",
            value=NodeHealth.ejected_total,
        )
