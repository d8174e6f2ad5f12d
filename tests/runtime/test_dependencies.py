"""A handler's own call that finds no node, or cannot connect, reaches the handler's
caller as UNAVAILABLE naming the dependency; what a dependency answered passes through."""

from __future__ import annotations

import socket

import echo_micro
import echo_pb2
import pytest
from runtime_support import Start

import micro
from micro import errors
from micro.registry import Endpoint, MemoryRegistry, Node, Service

Req = echo_pb2.EchoRequest
DEPENDENCY = r"/echo\.v1\.Echo/Get could not reach a dependency: "


async def test_missing_dependency_is_unavailable(cluster: Start, client: micro.Client) -> None:
    await cluster("front")
    front = echo_micro.EchoClient("front", client)
    with pytest.raises(errors.Unavailable, match=DEPENDENCY + "service 'back' not found"):
        await front.get(Req(hops=["back"]), timeout=10)
    # Called directly, a missing service is still NOT_FOUND (ServiceNotFound).
    with pytest.raises(errors.ServiceNotFound, match="service 'back' not found"):
        await echo_micro.EchoClient("back", client).get(Req(), timeout=10)


async def test_no_matching_node_is_unavailable(
    cluster: Start, client: micro.Client, registry: MemoryRegistry
) -> None:
    await cluster("front")
    other = Endpoint("other.v1.Other.Get", "other.v1.Req", "other.v1.Reply")
    back = Service("back", endpoints=(other,), nodes=(Node("back-1", "127.0.0.1:1"),))
    await registry.register(back, ttl=30)  # a service 'back', but not serving Echo.Get
    front = echo_micro.EchoClient("front", client)
    with pytest.raises(
        errors.Unavailable, match=DEPENDENCY + "no node of service 'back' matches this method"
    ):
        await front.get(Req(hops=["back"]), timeout=10)


async def test_unreachable_dependency_is_unavailable(
    cluster: Start, client: micro.Client, registry: MemoryRegistry
) -> None:
    await cluster("front")
    with socket.socket() as s:  # a loopback port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    await registry.register(Service("back", nodes=(Node("back-1", address),)), ttl=30)
    front = echo_micro.EchoClient("front", client)
    with pytest.raises(errors.Unavailable, match=f"cannot connect to service 'back' at {address}"):
        await front.get(Req(hops=["back"]), timeout=10)


@pytest.mark.parametrize("code", ["NOT_FOUND", "UNAVAILABLE", "PERMISSION_DENIED"])
async def test_what_a_dependency_answers_passes_through(
    cluster: Start, client: micro.Client, code: str
) -> None:
    await cluster("front")
    back, _ = await cluster("back")
    front = echo_micro.EchoClient("front", client)
    with pytest.raises(errors.Error) as raised:
        await front.get(Req(hops=["back"], fail=code), timeout=10)
    assert raised.value.code.name == code
    assert raised.value.message == f"{back.id} fails as asked"
