"""Stopping: callers behind on the deregistration are served, a failed start leaves
nothing behind."""

from __future__ import annotations

import asyncio
import time

import echo_micro
import echo_pb2
import pytest
from runtime_support import Echo

import micro
from micro.broker.redis import RedisBroker
from micro.registry import MemoryRegistry, Node, Service

CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)
GRACE = 20.0  # the stopping node's: it may serve stale callers for half of it


async def test_callers_still_listing_a_stopping_node_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client's registry keeps listing the node after it deregistered (a registry
    slow to propagate): its non-idempotent calls are served, not refused, until the
    listing moves on; then the node stops after a short quiet, long before its grace."""
    # The node serves while calls keep coming within the quiet of each other. One call
    # after another is that on an idle machine (0.25 s), not on a loaded CI machine,
    # where one gap between two awaited calls outlasted it: so a wider quiet, still
    # well under what the stop is allowed (GRACE / 4).
    monkeypatch.setattr(micro.service, "QUIET", 2.0)
    leaving, staying = (
        micro.Service("echo", registry=MemoryRegistry(), config=CONFIG) for _ in "ab"
    )
    for svc in (leaving, staying):
        svc.handle(Echo(svc.id))
        await svc.start()
    listing = MemoryRegistry()  # what the client sees
    old = Service("echo", nodes=(Node(leaving.id, leaving.address),))
    await listing.register(old, ttl=3600)
    async with micro.Client(listing, config=CONFIG) as client:
        echo = echo_micro.EchoClient("echo", client)
        stopping = asyncio.ensure_future(leaving.stop(grace=GRACE))
        served = [(await echo.put(echo_pb2.EchoRequest(), timeout=5)).node for _ in range(50)]
        assert not stopping.done()  # calls keep arriving: it keeps serving
        assert served == [leaving.id] * 50  # every Put answered by the stopping node
        await listing.deregister(old)
        await listing.register(Service("echo", nodes=(Node(staying.id, staying.address),)), 3600)
        moved = time.monotonic()
        for _ in range(1000):  # until the client's cache has followed the listing's watch
            if (await echo.put(echo_pb2.EchoRequest(), timeout=5)).node == staying.id:
                break
        else:
            pytest.fail("the client never followed the listing to the staying node")
        await asyncio.wait_for(stopping, GRACE / 4)  # by the quiet, not the grace
        assert time.monotonic() - moved < GRACE / 4
    await staying.stop(grace=0)


async def test_a_start_that_fails_leaves_nothing_behind() -> None:
    """An unreachable broker fails ``start`` naming it, after the node had registered:
    the node leaves the registry again and its server stops."""
    registry = MemoryRegistry()
    broker = RedisBroker("redis://127.0.0.1:1/0")  # nothing listens on port 1
    svc = micro.Service("echo", registry=registry, broker=broker, config=CONFIG)
    svc.handle(Echo())

    @svc.subscribe("events")
    async def on_event(event: echo_pb2.EchoRequest, ctx: micro.EventContext) -> None: ...

    with pytest.raises(micro.broker.BrokerError, match=r"127\.0\.0\.1:1"):
        await svc.start()
    assert await registry.get_service("echo") == []
    with pytest.raises(RuntimeError, match="not started"):
        svc.record  # noqa: B018
    async with micro.Client(registry, config=CONFIG) as client:
        options = micro.CallOptions(address=svc.address, retries=0)
        with pytest.raises(micro.errors.Unavailable):
            await echo_micro.EchoClient("echo", client).get(
                echo_pb2.EchoRequest(), timeout=2, options=options
            )
