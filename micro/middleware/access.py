"""The access log: one JSON line per call made, call served and message delivered.

Each line says what (service, method or topic), how it ended (status code, and for a
delivery its disposition), how long it took, where (the node a call went to, the
peer a served call came from) and its trace id when OpenTelemetry tracing is on.
Never metadata or payloads, so never credentials. Lines go to the ``micro.access``
logger at INFO; a Service with ``MICRO_ACCESS_LOG=1`` installs this.

    {"kind": "server", "service": "greeter", "method": "/greeter.v1.Greeter/SayHello",
     "trace_id": "4bf9…", "node": "127.0.0.1:51234", "code": "OK", "duration": 0.0004}
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from micro.middleware.base import (
    ClientAttempt,
    ClientCall,
    Ending,
    Incoming,
    Middleware,
    Outcome,
    ServerCall,
)

try:
    from opentelemetry import trace
except ImportError:  # without OpenTelemetry, lines have no trace id
    trace = None  # type: ignore[assignment]

log = logging.getLogger("micro.access")


def trace_id() -> str | None:
    """The current span's trace id, if OpenTelemetry has one."""
    if trace is None:
        return None
    span = trace.get_current_span().get_span_context()
    return format(span.trace_id, "032x") if span.is_valid else None


class AccessLog(Middleware):
    """Logs every client call, server call and delivery to ``logger``.

    ``service``: the name written for calls served here (a Service gives its own);
    else each call's proto service.
    """

    def __init__(self, logger: logging.Logger = log, *, service: str | None = None) -> None:
        self.logger = logger
        self.service = service
        self._calls: dict[int, dict[str, Any]] = {}  # id(ClientCall) → its line, while it runs

    def call(self, call: ClientCall) -> Ending:
        key = id(call)
        began = time.perf_counter()
        line = self._calls[key] = _line("client", call.service, call.method)
        line["node"] = ""

        def ended(outcome: Outcome) -> None:
            del self._calls[key]
            self._write(began, outcome, line)

        return ended

    def attempt(self, attempt: ClientAttempt) -> None:
        line = self._calls.get(id(attempt.call))
        if line is not None:
            line["node"] = attempt.node.address
            # a call outside any span has the trace tracing started for it (and put in
            # its attempts' traceparent: version-traceid-spanid-flags)
            for key, value in attempt.metadata:
                if key == "traceparent" and isinstance(value, str) and value.count("-") == 3:
                    line["trace_id"] = value.split("-")[1]

    def handle(self, call: ServerCall) -> Ending:
        began, line = (
            time.perf_counter(),
            _line("server", self.service or call.service, call.method),
        )
        line["node"] = call.ctx.peer.address
        return lambda outcome: self._write(began, outcome, line)

    def deliver(self, message: Incoming) -> Ending:
        began, line = time.perf_counter(), _line("delivery", topic=message.topic)
        line.update(queue=message.queue, attempt=message.attempt)

        def ended(outcome: Outcome) -> None:
            line["disposition"] = outcome.disposition or (
                "acked" if outcome.error is None else "retried"
            )
            self._write(began, outcome, line)

        return ended

    def _write(self, began: float, outcome: Outcome, line: dict[str, Any]) -> None:
        line["code"] = outcome.code.name
        line["duration"] = round(time.perf_counter() - began, 6)
        self.logger.info("%s", _Json(line))


def _line(kind: str, service: str = "", method: str = "", *, topic: str = "") -> dict[str, Any]:
    """A line's fields known when the thing begins (its trace id among them)."""
    line: dict[str, Any] = {"kind": kind}
    if topic:
        line["topic"] = topic
    else:
        line.update(service=service, method=method)
    trace = trace_id()
    if trace is not None:
        line["trace_id"] = trace
    return line


class _Json:
    """Formats its line only if a handler emits it."""

    __slots__ = ("line",)

    def __init__(self, line: dict[str, Any]) -> None:
        self.line = line

    def __str__(self) -> str:
        return json.dumps(self.line, separators=(", ", ": "))
