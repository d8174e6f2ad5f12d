"""Start, serve, stop: health, reflection, graceful drain, registration."""

from __future__ import annotations

import asyncio

import echo_micro
import echo_pb2
import grpc
import pytest
from echo_node import HOLD
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from runtime_support import Echo, Start

import micro
from micro.registry import EventType, MemoryRegistry

Req = echo_pb2.EchoRequest


async def test_registers_endpoints_and_metadata(registry: MemoryRegistry, cluster: Start) -> None:
    svc, _ = await cluster(version="1.2.0", metadata={"zone": "east"})
    (entry,) = await registry.get_service("echo")
    assert entry.version == "1.2.0"
    assert entry.metadata["zone"] == "east"
    assert {e.name for e in entry.endpoints} == {
        "echo.v1.Echo.Get",
        "echo.v1.Echo.Put",
        "echo.v1.Echo.Watch",
    }
    (node,) = entry.nodes
    assert (node.id, node.address) == (svc.id, svc.address)
    await svc.stop(grace=0)
    assert await registry.get_service("echo") == []


async def test_health_and_reflection(cluster: Start) -> None:
    svc, _ = await cluster()
    async with grpc.aio.insecure_channel(svc.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "echo.v1.Echo"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in reflect.ServerReflectionInfo(iter([request])):
            names = {s.name for s in answer.list_services_response.service}
        assert {"echo.v1.Echo", "grpc.health.v1.Health"} <= names
        await svc.server.not_serving()
        reply = await health.Check(health_pb2.HealthCheckRequest(service="echo.v1.Echo"))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_stop_leaves_registry_then_drains_calls_in_flight(
    registry: MemoryRegistry, cluster: Start, client: micro.Client
) -> None:
    leaving, held = await cluster(metadata={"slot": "a"})
    _, other = await cluster(metadata={"slot": "b"})
    pinned = echo_micro.EchoClient(
        "echo", client, options=micro.CallOptions(metadata_filter={"slot": "a"})
    )
    # Held in their handler until released below: in flight across the whole stop.
    calls = [asyncio.ensure_future(pinned.get(Req(text=HOLD))) for _ in range(50)]
    await asyncio.wait_for(held.wait_received(50), 5)
    changes = registry.watch("echo")
    stopping = asyncio.ensure_future(leaving.stop(grace=10))
    event = await asyncio.wait_for(anext(changes), 5)
    assert event.type is EventType.DELETE
    assert event.service.nodes[0].id == leaving.id
    assert not any(c.done() for c in calls)  # the stop cut none of them short
    anyone = echo_micro.EchoClient("echo", client)
    assert {(await anyone.get(Req())).node for _ in range(10)} == {other.node}
    assert not stopping.done()  # it left the registry while calls were still running
    held.release.set()
    replies = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert [r.node for r in replies] == [leaving.id] * 50  # every call in flight finished
    assert [r.text for r in replies] == [HOLD] * 50
    await asyncio.wait_for(stopping, 10)
    await changes.aclose()  # type: ignore[attr-defined]


async def test_reregisters_before_ttl(registry: MemoryRegistry) -> None:
    # Refreshed every tenth of the TTL: a refresh may run 0.9 s late on a loaded
    # machine (the loop busy elsewhere) before the entry expires.
    config = micro.Config(registry="memory", register_ttl=1.0, register_interval=0.1)
    svc = micro.Service("short-lived", registry=registry, config=config)
    await svc.start()
    changes = registry.watch("short-lived")
    try:
        # Three TTLs pass: the node must still be there, never expired in between.
        done = asyncio.ensure_future(asyncio.sleep(3 * config.register_ttl))
        expired = asyncio.ensure_future(anext(changes))
        finished, _ = await asyncio.wait({done, expired}, return_when=asyncio.FIRST_COMPLETED)
        assert expired not in finished, "the registration expired between refreshes"
        expired.cancel()
        await asyncio.gather(expired, return_exceptions=True)
        assert [n.id for s in await registry.get_service("short-lived") for n in s.nodes] == [
            svc.id
        ]
    finally:
        await svc.stop(grace=0)
        await changes.aclose()  # type: ignore[attr-defined]


def test_a_wildcard_bind_advertises_a_routable_address() -> None:
    from micro.service import routable

    # Documentation and private addresses stand for this host's own: nothing is bound
    # or registered here, the choice alone is checked.
    own = ["127.0.0.1", "::1", "fe80::1", "169.254.7.7", "2001:db8::5", "10.1.2.3", "192.0.2.9"]
    assert routable(own) == "10.1.2.3"  # IPv4 first, in the order found
    assert routable(["::1", "fe80::1", "2001:db8::5"]) == "2001:db8::5"
    assert routable(["127.0.0.1", "127.0.1.1", "::1", "0.0.0.0", "224.0.0.251", "host"]) is None


async def test_advertise_sets_the_registered_address(registry: MemoryRegistry) -> None:
    config = micro.Config.from_env(
        {"MICRO_REGISTRY": "memory", "MICRO_SERVER_ADDRESS": "0.0.0.0:0"},
        register_ttl=30.0,
    )
    svc = micro.Service("advertised", registry=registry, config=config, advertise="127.0.0.2")
    svc.handle(Echo(svc.id))
    await svc.start()
    try:
        port = svc.server.address.rpartition(":")[2]
        (entry,) = await registry.get_service("advertised")
        assert [n.address for n in entry.nodes] == [f"127.0.0.2:{port}"]
        async with micro.Client(registry) as client:  # reached at the advertised address
            assert (await echo_micro.EchoClient("advertised", client).get(Req())).node == svc.id
    finally:
        await svc.stop(grace=0)
    env = {"MICRO_REGISTRY": "memory", "MICRO_SERVER_ADVERTISE": "127.0.0.2:7000"}
    svc = micro.Service("advertised", registry=registry, config=micro.Config.from_env(env))
    await svc.start()
    try:
        assert [n.address for s in await registry.get_service("advertised") for n in s.nodes] == [
            "127.0.0.2:7000"
        ]
    finally:
        await svc.stop(grace=0)
    with pytest.raises(micro.ConfigError, match=r"MICRO_SERVER_ADVERTISE='a b:1': expected host"):
        micro.Config.from_env({"MICRO_SERVER_ADVERTISE": "a b:1"})
