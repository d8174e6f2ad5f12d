"""Reflection under auth: it lists every service, so it answers only callers the
rules admit (a token by default; public by a rule); health answers everyone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from runtime_support import Echo
from token_support import Issuer

import micro
from micro.registry import MemoryRegistry

TIMEOUT = 10  # a refused or answered call is immediate; the bound only catches a hang
Start = Callable[..., Awaitable[micro.Service]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    started: list[micro.Service] = []

    async def run(key: Path, rules: list[dict[str, str]] | None = None) -> micro.Service:
        path = None
        if rules is not None:
            path = tmp_path / "rules.json"
            path.write_text(json.dumps(rules))
        config = micro.Config(
            registry="memory",
            auth_public_key=str(key),
            auth_rules=None if path is None else str(path),
        )
        svc = micro.Service("echo", registry=MemoryRegistry(), config=config)
        svc.handle(Echo(svc.id))
        await svc.start()
        started.append(svc)
        return svc

    yield run
    for svc in started:
        await svc.stop(grace=0)


async def listed(address: str, token: str | None = None) -> list[str] | str:
    """The services reflection lists, or the status code it refused with."""
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            async for reply in stub.ServerReflectionInfo(
                iter([ask]), metadata=metadata, timeout=TIMEOUT
            ):
                return sorted(s.name for s in reply.list_services_response.service)
        except grpc.aio.AioRpcError as e:
            return str(e.code().name)
    return "no reply"


async def test_reflection_needs_a_token_and_health_does_not(start: Start, tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    svc = await start(issuer.key)
    assert await listed(svc.address) == "UNAUTHENTICATED"
    assert await listed(svc.address, issuer.token(lifetime=-3600)) == "UNAUTHENTICATED"
    assert "echo.v1.Echo" in await listed(svc.address, issuer.token())
    async with grpc.aio.insecure_channel(svc.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_rule_makes_reflection_public(start: Start, tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    public = {"resource": "grpc.reflection.v1alpha.ServerReflection/*", "scope": "public"}
    svc = await start(issuer.key, [public, {"resource": "*", "scope": "*"}])
    assert "echo.v1.Echo" in await listed(svc.address)
