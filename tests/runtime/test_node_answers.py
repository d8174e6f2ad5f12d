"""What a node's answer says about the node: one that is not the service, one too
busy to run a call, one that sheds load beyond its cap, one that is stopping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import echo_micro
import echo_pb2
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from runtime_support import Echo, Start

import micro
from micro import errors
from micro.config import Config, ConfigError
from micro.registry import MemoryRegistry, Node, Service

CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)
Req = echo_pb2.EchoRequest
ROUND_ROBIN = micro.CallOptions(strategy="round_robin")  # every node in turn: each is hit


@pytest.fixture
async def foreign() -> AsyncIterator[str]:
    """Another gRPC server (health only), as an mDNS entry with a wrong address finds."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


async def test_a_node_that_is_not_the_service_is_ejected_and_calls_go_elsewhere(
    cluster: Start, registry: MemoryRegistry, client: micro.Client, foreign: str
) -> None:
    svc, _ = await cluster("echo")
    await registry.register(Service("echo", nodes=(Node("foreign", foreign),)), ttl=3600)
    echo = echo_micro.EchoClient("echo", client, options=ROUND_ROBIN)
    for _ in range(10):  # a Put never ran on the foreign node: retried, not twice-run
        assert (await echo.put(Req(), timeout=5)).node == svc.id
        assert [r.node async for r in echo.watch(Req(), timeout=5)] == [svc.id] * 3
    assert client._pool.peers[foreign].ejected_until > time.monotonic()


async def test_unimplemented_from_an_address_called_directly_is_the_answer(
    client: micro.Client, foreign: str
) -> None:
    direct = micro.CallOptions(address=foreign, retries=3)
    with pytest.raises(errors.Unimplemented):
        await echo_micro.EchoClient("echo", client).get(Req(), timeout=5, options=direct)
    assert client._pool.peers[foreign].ejected_until == 0  # nothing says it is wrong


async def test_cancelled_from_a_node_not_stopping_is_not_stopping(
    cluster: Start, client: micro.Client
) -> None:
    """The probe: an overloaded grpc server answers CANCELLED to calls it drops unrun,
    and its only node was ejected again and again as "stopping". Here the node answers
    CANCELLED while its connection stays up, as an overloaded one does."""
    svc, handler = await cluster("echo")
    echo = echo_micro.EchoClient("echo", client)
    for _ in range(5):
        with pytest.raises(errors.Cancelled) as raised:
            await echo.put(Req(fail="CANCELLED"), timeout=5)
        assert "stopping" not in str(raised.value)
    assert handler.received == 5  # a Put that may have run is not run again
    with pytest.raises(errors.Cancelled):
        await echo.get(Req(fail="CANCELLED"), timeout=5)
    assert handler.received == 5 + 4  # a Get may run again: retried (3 retries)
    assert client._pool.peers[svc.address].ejected_until == 0


class Holding(Echo):
    """Echo whose Puts with text "hold" wait until ``release`` is set."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.release = asyncio.Event()

    async def put(self, request: Req, ctx: micro.Context) -> echo_pb2.EchoReply:
        if request.text == "hold":
            self.received += 1
            async with self.arrived:
                self.arrived.notify_all()
            await self.release.wait()
            return echo_pb2.EchoReply(node=self.node)
        return await super().put(request, ctx)


async def test_a_node_at_its_cap_refuses_at_once_and_the_call_runs_elsewhere(
    registry: MemoryRegistry, client: micro.Client
) -> None:
    capped = micro.Service("echo", registry=registry, config=CONFIG, max_calls=2)
    free = micro.Service("echo", registry=registry, config=CONFIG)
    held, other = Holding(capped.id), Echo(free.id)
    capped.handle(held)
    free.handle(other)
    for svc in (capped, free):
        await svc.start()
    try:
        echo = echo_micro.EchoClient("echo", client, options=ROUND_ROBIN)
        pinned = micro.CallOptions(address=capped.address, retries=0)
        holding = [
            asyncio.ensure_future(echo.put(Req(text="hold"), timeout=30, options=pinned))
            for _ in range(2)
        ]
        await asyncio.wait_for(held.wait_received(2), 10)  # the cap is reached
        with pytest.raises(errors.ResourceExhausted, match="refused, 2 calls in progress"):
            await echo.put(Req(), timeout=5, options=pinned)  # at once: nothing to wait for
        for _ in range(10):  # Puts refused there never ran: each is sent to the other
            assert (await echo.put(Req(), timeout=5)).node == free.id
        assert held.received == 2
        assert client._pool.peers[capped.address].ejected_until == 0  # busy, not unwell
        held.release.set()
        assert [(await h).node for h in holding] == [capped.id] * 2
        assert (await echo.put(Req(), timeout=5, options=pinned)).node == capped.id  # room again
    finally:
        held.release.set()
        for svc in (capped, free):
            await svc.stop(grace=0)


async def test_a_stopping_node_refuses_new_calls_unrun_and_says_it_is_going(
    registry: MemoryRegistry, client: micro.Client
) -> None:
    """Once its stop begins a node refuses new calls itself, UNAVAILABLE marked as
    refused (grpc's own refusal is a bare CANCELLED, as an overload's): a Put, which
    must not run twice, is sent to another node, and the node's later CANCELLED
    answers read as "stopping". The call it holds drains meanwhile."""
    stopping = micro.Service("echo", registry=registry, config=CONFIG)
    staying = micro.Service("echo", registry=registry, config=CONFIG)
    held, other = Holding(stopping.id), Echo(staying.id)
    stopping.handle(held)
    staying.handle(other)
    for svc in (stopping, staying):
        await svc.start()
    try:
        echo = echo_micro.EchoClient("echo", client, options=ROUND_ROBIN)
        pinned = micro.CallOptions(address=stopping.address, retries=0)
        holding = asyncio.ensure_future(echo.put(Req(text="hold"), timeout=30, options=pinned))
        await asyncio.wait_for(held.wait_received(1), 10)
        stop = asyncio.ensure_future(stopping.server.stop(grace=30))  # drains the held Put
        with pytest.raises(errors.Unavailable, match="refused, the server is stopping"):
            await echo.put(Req(), timeout=5, options=pinned)
        assert client._pool.peers[stopping.address].stopping
        for _ in range(4):  # the listing still names it: refused there, run on the other
            assert (await echo.put(Req(), timeout=5)).node == staying.id
        assert held.received == 1
        assert not stop.done()
        held.release.set()
        assert (await holding).node == stopping.id
        await asyncio.wait_for(stop, 10)
    finally:
        held.release.set()
        for svc in (stopping, staying):
            await svc.stop(grace=0)


@pytest.mark.parametrize("text", ["0", "-1", "many", "inf", "2.5", "1e9"])
def test_a_cap_that_cannot_work_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"MICRO_SERVER_MAX_CALLS='{text}'"):
        Config.from_env({"MICRO_SERVER_MAX_CALLS": text})
    assert Config.from_env({"MICRO_SERVER_MAX_CALLS": "64"}).server_max_calls == 64


async def settled(client: micro.Client, name: str, nodes: int) -> None:
    """Until the client's cache lists ``nodes`` nodes of ``name`` and its health checks
    of nodes that left have answered: no event of theirs to await (bounded poll)."""
    deadline = time.monotonic() + 5
    while sum(len(s.nodes) for s in client.registry.cached(name) or ()) != nodes or client._checks:
        assert time.monotonic() < deadline, "the client never settled"
        await asyncio.sleep(0.01)


class Unverified(MemoryRegistry):
    """A registry whose removals anyone may send, as mDNS goodbyes."""

    removals_unverified = True


@pytest.mark.parametrize(
    ("registry", "serving", "kept"),
    [
        (Unverified(), True, True),
        (Unverified(), False, False),
        (MemoryRegistry(), True, False),
    ],
    ids=["unverified-serving", "unverified-not-serving", "authoritative"],
)
async def test_a_node_that_left_the_registry_is_kept_while_it_says_it_serves(
    cluster: Start, registry: MemoryRegistry, client: micro.Client, serving: bool, kept: bool
) -> None:
    """A node a registry of unverified removals dropped (a goodbye forged or mistaken)
    while this client is connected to it and hearing from it stays in use if its
    health says SERVING; a stopping node says NOT_SERVING before it leaves, and is
    dropped. Other registries' removals are final."""
    (leaving, _), (staying, _) = await cluster("echo"), await cluster("echo")
    echo = echo_micro.EchoClient("echo", client, options=ROUND_ROBIN)
    assert {(await echo.put(Req(), timeout=5)).node for _ in range(4)} == {leaving.id, staying.id}
    if not serving:
        await leaving.server.not_serving()
    await registry.deregister(leaving.record)
    await settled(client, "echo", 1)
    await echo.put(Req(), timeout=5)  # the client sees the change, asks the node's health
    await settled(client, "echo", 1)
    answered = {(await echo.put(Req(), timeout=5)).node for _ in range(10)}
    assert answered == ({leaving.id, staying.id} if kept else {staying.id})
