"""Calls by service name over loopback: balancing, filters, errors, streams."""

from __future__ import annotations

import asyncio
import collections
import importlib
import re
import threading
import time
from typing import Any

import echo_micro
import echo_pb2
import grpc
import pytest
from echo_node import HOLD
from runtime_support import Start

import micro
from micro import errors
from micro.registry import MemoryRegistry, Node, Service

Req = echo_pb2.EchoRequest
# The first hop's deadline in the propagation tests: under 1 s, so grpc sends it in
# whole milliseconds, and long enough for three in-process hops on a loaded machine.
TIMEOUT = 0.9
GAP = 0.1  # seconds grpc's connectivity thread is held off a core (the test below)


async def test_round_robin_spreads_evenly(cluster: Start, client: micro.Client) -> None:
    nodes = [(await cluster())[0].id for _ in range(3)]
    echo = echo_micro.EchoClient("echo", client, options=micro.CallOptions(strategy="round_robin"))
    counts = collections.Counter([(await echo.get(Req())).node for _ in range(300)])
    assert set(counts) == set(nodes)
    assert all(90 <= n <= 110 for n in counts.values()), counts


async def test_least_request_uses_every_node(cluster: Start, client: micro.Client) -> None:
    nodes = [(await cluster())[0].id for _ in range(3)]
    echo = echo_micro.EchoClient("echo", client)
    replies = await asyncio.gather(*(echo.get(Req(sleep=0.01)) for _ in range(90)))
    counts = collections.Counter(r.node for r in replies)
    assert set(counts) == set(nodes)
    assert min(counts.values()) >= 10, counts  # in-flight counts keep it balanced


async def test_version_filter_routes_a_rolling_deploy(cluster: Start, client: micro.Client) -> None:
    old = {(await cluster(version="v1"))[0].id for _ in range(2)}
    new = (await cluster(version="v2"))[0].id
    echo = echo_micro.EchoClient("echo", client)
    v2 = micro.CallOptions(version="v2")
    assert {(await echo.get(Req(), options=v2)).node for _ in range(20)} == {new}
    v1 = micro.CallOptions(version="v1", strategy="round_robin")
    assert {(await echo.get(Req(), options=v1)).node for _ in range(20)} == old
    unfiltered = micro.CallOptions(strategy="round_robin")
    assert {(await echo.get(Req(), options=unfiltered)).node for _ in range(30)} == old | {new}


async def test_metadata_filter(cluster: Start, client: micro.Client) -> None:
    east = (await cluster(metadata={"zone": "east"}))[0].id
    await cluster(metadata={"zone": "west"})
    echo = echo_micro.EchoClient(
        "echo", client, options=micro.CallOptions(metadata_filter={"zone": "east"})
    )
    assert {(await echo.get(Req())).node for _ in range(20)} == {east}
    with pytest.raises(errors.ServiceNotFound, match="zone='north'"):
        await echo.get(Req(), options=micro.CallOptions(metadata_filter={"zone": "north"}))


async def test_handler_error_reaches_caller_typed(cluster: Start, client: micro.Client) -> None:
    await cluster()
    echo = echo_micro.EchoClient("echo", client)
    with pytest.raises(errors.NotFound, match="fails as asked") as raised:
        await echo.get(Req(fail="NOT_FOUND"))
    assert not isinstance(raised.value, errors.ServiceNotFound)
    assert raised.value.code is grpc.StatusCode.NOT_FOUND


async def test_unknown_service_is_named(client: micro.Client) -> None:
    echo = echo_micro.EchoClient("no-such-service", client)
    with pytest.raises(errors.ServiceNotFound, match="'no-such-service' not found"):
        await echo.get(Req())


async def test_non_idempotent_call_is_not_retried_once_received(
    cluster: Start, client: micro.Client
) -> None:
    _, sick = await cluster()
    _, well = await cluster()
    sick.unavailable = True
    echo = echo_micro.EchoClient("echo", client, options=micro.CallOptions(strategy="round_robin"))
    failures = 0
    for _ in range(10):
        try:
            await echo.put(Req())
        except errors.Unavailable:
            failures += 1
    assert sick.received + well.received == 10  # each Put ran exactly once
    assert failures == sick.received > 0


async def test_idempotent_call_is_retried_elsewhere(cluster: Start, client: micro.Client) -> None:
    _, sick = await cluster()
    _, well = await cluster()
    sick.unavailable = True
    echo = echo_micro.EchoClient("echo", client, options=micro.CallOptions(strategy="round_robin"))
    replies = [await echo.get(Req()) for _ in range(10)]
    assert {r.node for r in replies} == {well.node}
    assert sick.received > 0  # it was tried, and the retry went to the healthy node


async def test_non_idempotent_call_is_retried_when_never_sent(
    registry: MemoryRegistry, cluster: Start, client: micro.Client, unused_port: int
) -> None:
    _, live = await cluster()
    dead = Service("echo", nodes=(Node("dead", f"127.0.0.1:{unused_port}"),))
    await registry.register(dead, ttl=30)
    echo = echo_micro.EchoClient("echo", client, options=micro.CallOptions(strategy="round_robin"))
    replies = [await echo.put(Req()) for _ in range(10)]
    assert {r.node for r in replies} == {live.node}
    assert live.received == 10


async def test_stream_by_name(cluster: Start, client: micro.Client) -> None:
    await cluster()
    echo = echo_micro.EchoClient("echo", client)
    assert [r.text async for r in echo.watch(Req(text="x"))] == ["x0", "x1", "x2"]


async def test_direct_address_bypasses_discovery(cluster: Start) -> None:
    svc, _ = await cluster()
    async with micro.Client(MemoryRegistry()) as client:  # an empty registry
        echo = echo_micro.EchoClient(
            "anything", client, options=micro.CallOptions(address=svc.address)
        )
        assert (await echo.get(Req())).node == svc.id


async def test_sync_client_same_policy(cluster: Start, client: micro.Client) -> None:
    nodes = [(await cluster())[0].id for _ in range(3)]
    _, sick = await cluster(version="sick")
    sick.unavailable = True
    echo = echo_micro.EchoSyncClient(
        "echo", client, options=micro.CallOptions(strategy="round_robin")
    )

    def calls() -> tuple[collections.Counter[str], int]:
        failed_puts = 0
        for _ in range(8):
            try:
                echo.put(Req())
            except errors.Unavailable:
                failed_puts += 1
        counts = collections.Counter(echo.get(Req()).node for _ in range(300))
        return counts, failed_puts

    counts, failed_puts = await asyncio.to_thread(calls)
    assert set(counts) == set(nodes)  # the sick node's calls were retried elsewhere
    assert all(85 <= n <= 115 for n in counts.values()), counts
    assert failed_puts > 0  # a Put the sick node received is not run again
    client.close_sync()


async def test_closing_a_blocking_client_raises_in_no_thread(
    cluster: Start, client: micro.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpc follows a sync channel's connectivity from a thread of its own, waiting
    0.2 s at a time; a channel closed between two of its waits made it raise there
    (grpc issue 18995). Here each wait starts GAP late, as on a loaded machine where
    the thread waits for a core, so the close lands in that gap."""
    await cluster()
    internals = importlib.import_module("grpc._channel")  # the follower is grpc's own
    followers: list[threading.Thread] = []
    raised: list[BaseException | None] = []

    class Late:
        """grpc's core channel, each connectivity wait starting GAP late."""

        def __init__(self, channel: Any) -> None:
            self.channel = channel

        def check_connectivity_state(self, try_to_connect: bool) -> Any:
            return self.channel.check_connectivity_state(try_to_connect)

        def watch_connectivity_state(self, last: Any, deadline: float) -> Any:
            time.sleep(GAP)
            return self.channel.watch_connectivity_state(last, deadline + GAP)

    def follow_late(state: Any, try_to_connect: bool) -> None:
        """grpc's ``_spawn_poll_connectivity``, its thread given the late channel."""
        thread = threading.Thread(
            target=internals._poll_connectivity,
            args=(state, Late(state.channel), try_to_connect),
            daemon=True,
        )
        followers.append(thread)
        thread.start()
        state.polling = True

    monkeypatch.setattr(internals, "_spawn_poll_connectivity", follow_late)
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    echo = echo_micro.EchoSyncClient("echo", client)

    def calls_then_close() -> None:
        for _ in range(3):
            echo.put(Req())  # a Put connects first: the channel is followed
        client.close_sync()  # well within GAP of the follower's last wake-up

    await asyncio.to_thread(calls_then_close)
    assert len(followers) == 1  # the channel was followed
    followers[0].join(2 * GAP + 0.2)  # its gap, then one 0.2 s wait of grpc's
    assert not followers[0].is_alive()
    assert raised == []


async def test_metadata_and_deadline_propagate(cluster: Start, client: micro.Client) -> None:
    for name in ("a", "b", "c"):
        await cluster(name)
    a = echo_micro.EchoClient("a", client)
    reply = await a.get(
        Req(hops=["b", "c"]),
        timeout=TIMEOUT,
        metadata={"x-tenant": "acme", "authorization": "secret", "traceparent": "00-ab-cd-01"},
    )
    # The third hop saw the first hop's deadline. grpc sends a timeout under 1 s in
    # whole milliseconds, rounded up, after taking the deadline to its millisecond
    # clock: at most 2 ms gained on each of the three hops; time in transit only
    # shortens what the next hop is told.
    assert 0 < reply.remaining <= TIMEOUT + 3 * 0.002
    assert reply.metadata["x-tenant"] == "acme"
    assert reply.metadata["traceparent"] == "00-ab-cd-01"
    assert "authorization" not in reply.metadata  # credentials are not forwarded


async def test_first_hop_deadline_bounds_the_last(cluster: Start, client: micro.Client) -> None:
    handlers = {name: (await cluster(name))[1] for name in ("a", "b", "c")}
    a = echo_micro.EchoClient("a", client)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    with pytest.raises(errors.DeadlineExceeded):
        await a.get(Req(hops=["b", "c"], text=HOLD), timeout=TIMEOUT)
    assert loop.time() - begin < 5  # C never answers: the deadline ended the call
    assert handlers["c"].held == 1  # it reached C, which was cut off


async def test_garbage_request_gets_invalid_argument(cluster: Start, client: micro.Client) -> None:
    svc, _ = await cluster()
    async with grpc.aio.insecure_channel(svc.address) as channel:
        raw = channel.unary_unary("/echo.v1.Echo/Get", None, None)  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await raw(b"\xff\xff\xff\xff garbage")
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed echo.v1.EchoRequest" in (raised.value.details() or "")
    echo = echo_micro.EchoClient("echo", client)
    assert (await echo.get(Req(text="still serving"))).text == "still serving"


async def test_oversized_message_is_refused_clearly(registry: MemoryRegistry) -> None:
    svc = micro.Service("small", registry=registry, max_message_size=1024)
    svc.handle(__import__("echo_node").Echo(svc.id))
    await svc.start()
    try:
        async with micro.Client(registry) as client:
            echo = echo_micro.EchoClient("small", client)
            with pytest.raises(errors.ResourceExhausted):
                await echo.get(Req(text="x" * 4096))
            assert (await echo.get(Req(text="ok"))).text == "ok"
    finally:
        await svc.stop(grace=0)


def test_bad_registry_variable_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRO_REGISTRY", "zookeeper")
    with pytest.raises(micro.ConfigError, match="MICRO_REGISTRY='zookeeper'"):
        micro.Service("x")
    with pytest.raises(micro.ConfigError, match="MICRO_REGISTRY"):
        micro.Client()


async def test_channel_closed_when_node_leaves(
    registry: MemoryRegistry, cluster: Start, client: micro.Client
) -> None:
    leaving, _ = await cluster()
    staying, _ = await cluster()
    echo = echo_micro.EchoClient("echo", client, options=micro.CallOptions(strategy="round_robin"))
    assert {(await echo.get(Req())).node for _ in range(4)} == {leaving.id, staying.id}
    assert set(client._pool.peers) == {leaving.address, staying.address}
    changes = registry.watch("echo")
    await leaving.stop(grace=0)
    await asyncio.wait_for(anext(changes), 5)
    await changes.aclose()  # type: ignore[attr-defined]
    assert {(await echo.get(Req())).node for _ in range(4)} == {staying.id}
    assert set(client._pool.peers) == {staying.address}  # the departed node's channel is gone


BAD_METADATA = [
    ("X-Tenant", "acme"),  # uppercase key
    ("x tenant", "acme"),  # space in a key
    ("", "acme"),  # empty key
    ("x-tenant", "ac\nme"),  # newline in a value
    ("x-tenant", "acmé"),  # non-ASCII value
    ("x-tenant", b"acme"),  # bytes under a text key
    ("x-tenant-bin", "acme"),  # text under a -bin key
]


@pytest.mark.parametrize(("key", "value"), BAD_METADATA)
async def test_invalid_metadata_is_refused_before_sending(
    cluster: Start, client: micro.Client, key: str, value: str | bytes
) -> None:
    _, handler = await cluster()
    echo = echo_micro.EchoClient("echo", client)
    metadata: dict[str, str | bytes] = {"x-ok": "fine", key: value}
    named = rf"metadata (key )?{re.escape(repr(key))}"
    with pytest.raises(errors.InvalidArgument, match=named):
        await echo.get(Req(), metadata=metadata)
    with pytest.raises(errors.InvalidArgument, match=named):
        [reply async for reply in echo.watch(Req(), metadata=metadata)]
    sync = echo_micro.EchoSyncClient("echo", client)
    with pytest.raises(errors.InvalidArgument, match=named):
        await asyncio.to_thread(sync.get, Req(), metadata=metadata)
    assert handler.received == 0  # refused here: nothing reached the node
    good: dict[str, str | bytes] = {"x-tenant": "acme corp", "x-id-bin": b"\xff\x00"}
    assert (await echo.get(Req(), metadata=good)).metadata["x-tenant"] == "acme corp"
    client.close_sync()
