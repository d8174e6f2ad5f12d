"""The access log: one JSON line per call made, call served and delivery, with the
trace id when tracing is on, and never the metadata (credentials) of a call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any

import echo_micro
import echo_pb2
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry.sdk.trace import TracerProvider
from runtime_support import GEN, HERE, Echo

import micro
from micro import errors
from micro.broker.memory import MemoryBroker
from micro.middleware.access import AccessLog
from micro.middleware.tracing import Tracing
from micro.registry import MemoryRegistry

SECRET = "Bearer s3cret-token"


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "micro.access"]


async def test_a_line_per_call_made_and_served(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "micro.access")
    config = micro.Config(registry="memory", access_log=True)  # MICRO_ACCESS_LOG=1
    svc = micro.Service("echo", registry=MemoryRegistry(), config=config)
    svc.handle(Echo(svc.id))
    await svc.start()
    try:
        echo = echo_micro.EchoClient("echo", svc.client)
        await echo.get(echo_pb2.EchoRequest(), metadata=[("authorization", SECRET)])
        with pytest.raises(errors.NotFound):
            await echo.put(echo_pb2.EchoRequest(fail="NOT_FOUND"), metadata=[("x-key", SECRET)])
    finally:
        await svc.stop(grace=0)

    found = lines(caplog)
    assert [(x["kind"], x["method"], x["code"]) for x in found] == [
        ("server", "/echo.v1.Echo/Get", "OK"),  # the server's ends before the caller's
        ("client", "/echo.v1.Echo/Get", "OK"),
        ("server", "/echo.v1.Echo/Put", "NOT_FOUND"),
        ("client", "/echo.v1.Echo/Put", "NOT_FOUND"),
    ]
    client, server = found[1], found[0]
    assert client["service"] == "echo"
    assert client["node"] == svc.address  # where the call went
    assert server["service"] == "echo"
    assert server["node"].startswith("127.0.0.1:")  # the peer it came from
    assert all(isinstance(x["duration"], float) and x["duration"] >= 0 for x in found)
    assert "s3cret" not in caplog.text


async def test_lines_carry_the_trace_id_and_deliveries_their_disposition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "micro.access")
    tracing = Tracing(TracerProvider())
    svc = micro.Service(
        "billing",
        registry=MemoryRegistry(),
        broker=MemoryBroker(),
        config=micro.Config(registry="memory"),
        middleware=[tracing, AccessLog()],
    )
    delivered = asyncio.Event()

    @svc.subscribe("orders", queue="billing")
    async def on_order(event: StringValue, ctx: micro.EventContext) -> None:
        delivered.set()

    await svc.start()
    try:
        tracer = tracing.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("order") as span:
            await svc.publisher("orders", StringValue).publish(StringValue(value="1"))
        await asyncio.wait_for(delivered.wait(), 30)  # generous, for a loaded machine
    finally:
        await svc.stop(grace=0)  # waits for the delivery to end, so its line is written

    [line] = lines(caplog)
    assert line == {
        "kind": "delivery",
        "topic": "orders",
        "trace_id": format(span.get_span_context().trace_id, "032x"),
        "queue": "billing",
        "attempt": 1,
        "disposition": "acked",
        "code": "OK",
        "duration": line["duration"],
    }


SCRIPT = """
import asyncio, logging, sys
import echo_micro, echo_pb2
import micro
from echo_node import Echo
from micro.registry import MemoryRegistry

async def main() -> None:
    svc = micro.Service("echo", registry=MemoryRegistry())  # MICRO_ACCESS_LOG=1
    if sys.argv[1] == "configured":  # as Service.run does under MICRO_LOG_LEVEL
        logging.basicConfig(level=logging.WARNING, format="root %(message)s")
    svc.handle(Echo(svc.id))
    await svc.start()
    await echo_micro.EchoClient("echo", svc.client).get(echo_pb2.EchoRequest())
    await svc.stop(grace=0)

asyncio.run(main())
"""


@pytest.mark.parametrize("logging_", ["unconfigured", "configured"])
def test_lines_reach_stderr_once_whether_or_not_logging_is_configured(logging_: str) -> None:
    env = {**os.environ, "MICRO_ACCESS_LOG": "1", "MICRO_REGISTRY": "memory"}
    env["PYTHONPATH"] = os.pathsep.join([str(GEN), str(HERE), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, logging_],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a process start, one call: far less, even on a loaded machine
    )
    assert done.returncode == 0, done.stderr
    access = [line for line in done.stderr.splitlines() if '"kind": ' in line]
    prefix = "root " if logging_ == "configured" else ""
    assert [json.loads(line.removeprefix(prefix))["kind"] for line in access] == [
        "server",
        "client",
    ]
