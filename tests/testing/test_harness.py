"""The harness serves handlers on loopback and hands out typed clients, async and
blocking; everything it started is gone at the end of its block."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import echo_micro
import echo_pb2
import pytest
from runtime_support import Echo

import micro
from micro.testing import Harness, SyncHarness

Req = echo_pb2.EchoRequest


def refused(address: str) -> bool:
    """Whether nothing listens at ``address`` (a loopback host:port)."""
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


async def test_serves_handlers_to_a_typed_client(micro_harness: Harness) -> None:
    service = await micro_harness.serve("echo", Echo("node-1"))
    echo = micro_harness.client(echo_micro.EchoClient, "echo")
    reply = await echo.get(Req(text="hi"), timeout=10)
    assert (reply.text, reply.node) == ("hi", "node-1")
    assert [r.text async for r in echo.watch(Req(text="w"), timeout=10)] == ["w0", "w1", "w2"]
    assert service.address.startswith("127.0.0.1:")


async def test_serves_what_a_factory_builds(micro_harness: Harness) -> None:
    def create_service(**options: Any) -> micro.Service:
        service = micro.Service("echo", version="2.0.0", **options)
        service.handle(Echo("made"))
        return service

    service = await micro_harness.serve(create_service)
    assert service.registry is micro_harness.registry
    assert service.broker is micro_harness.broker
    reply = await micro_harness.client(echo_micro.EchoClient, "echo").get(Req(), timeout=10)
    assert reply.node == "made"


async def test_a_factory_that_returns_no_service_is_named(micro_harness: Harness) -> None:
    def broken(**options: Any) -> micro.Service:
        return None  # type: ignore[return-value]

    with pytest.raises(TypeError, match=r"serve\(<function .*broken.*\): the factory returned"):
        await micro_harness.serve(broken)
    with pytest.raises(TypeError, match="takes no handlers"):
        await micro_harness.serve(broken, Echo())


async def test_a_blocking_client_from_an_async_test(micro_harness: Harness) -> None:
    await micro_harness.serve("echo", Echo("node-1"))
    echo = micro_harness.client(echo_micro.EchoSyncClient, "echo")
    reply = await asyncio.to_thread(echo.get, Req(text="hi"), timeout=10)
    assert reply.node == "node-1"


def test_plain_test_with_blocking_clients(micro_sync_harness: SyncHarness) -> None:
    micro_sync_harness.serve("echo", Echo("node-1"))
    echo = micro_sync_harness.client(echo_micro.EchoSyncClient, "echo")
    assert echo.get(Req(text="hi"), timeout=10).node == "node-1"
    assert [r.text for r in echo.watch(Req(text="w"), timeout=10)] == ["w0", "w1", "w2"]


async def test_nothing_is_left_running_after_the_block() -> None:
    tasks = asyncio.all_tasks()
    async with Harness() as harness:
        one = await harness.serve("one", Echo())
        two = await harness.serve("two", Echo())
        await harness.client(echo_micro.EchoClient, "one").get(Req(), timeout=10)
        await harness.client(echo_micro.EchoClient, "two").get(Req(), timeout=10)
        addresses = [one.address, two.address]
    assert asyncio.all_tasks() == tasks
    assert all(refused(a) for a in addresses)
    assert await harness.registry.list_services() == []


def test_nothing_is_left_running_after_the_blocking_block() -> None:
    threads = set(threading.enumerate())
    with SyncHarness() as harness:
        service = harness.serve("echo", Echo())
        assert harness.client(echo_micro.EchoSyncClient, "echo").get(Req(), timeout=10).text == ""
    assert refused(service.address)
    assert [t.name for t in set(threading.enumerate()) - threads] == []
