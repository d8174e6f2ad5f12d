"""Call handles (``<Svc>Calls`` / ``<Svc>SyncCalls``), and what a client sets for the
calls it makes: a held blocking call cancelled from the thread that holds it, the
status and metadata of a call that succeeded, compression per call and per client
(counted on the wire), channel options, and a deadline that runs out while a call
waits for its connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import echo_micro
import echo_pb2
import grpc
import pytest
from relay import Relay
from runtime_support import Echo

import micro
from micro import errors
from micro.registry import MemoryRegistry, Service

Req = echo_pb2.EchoRequest
BIG = 300_000  # bytes of one letter: gzip makes them a few hundred


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, Echo]]:
    handler = Echo("node")
    server = micro.Server("127.0.0.1:0")
    server.add(handler)
    address = await server.start()
    yield address, handler
    handler.release.set()
    await server.stop(grace=0)


def direct(address: str, **options: object) -> micro.CallOptions:
    return micro.CallOptions(address=address, **options)  # type: ignore[arg-type]


async def test_a_held_blocking_call_is_cancelled_by_its_holder(echo: tuple[str, Echo]) -> None:
    address, handler = echo
    loop = asyncio.get_running_loop()
    holding = asyncio.Event()

    def held(n: int) -> None:
        loop.call_soon_threadsafe(holding.set)

    handler.on_hold = held

    with micro.Client() as client:
        calls = echo_micro.EchoSyncCalls("echo", client, options=direct(address))
        call = calls.put(Req(text="hold"))
        await asyncio.wait_for(holding.wait(), 30)  # the handler holds it: in flight
        assert not call.done()
        assert call.cancel()
        with pytest.raises(errors.Cancelled):
            await asyncio.to_thread(call.result, 30)  # 30 s bounds a loaded machine
        assert call.code() is grpc.StatusCode.CANCELLED
        assert call.cancelled()


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_succeeded_call_says_so(echo: tuple[str, Echo], blocking: bool) -> None:
    address, _ = echo
    async with micro.Client() as client:
        if blocking:
            sync = echo_micro.EchoSyncCalls("echo", client, options=direct(address))

            def run() -> tuple[str, grpc.StatusCode, str]:
                call = sync.watch(Req(text="w"))
                return ",".join(r.text for r in call), call.code(), call.details()

            texts, code, details = await asyncio.to_thread(run)
        else:
            call = echo_micro.EchoCalls("echo", client, options=direct(address)).watch(
                Req(text="w")
            )
            texts = ",".join([r.text async for r in call])
            code, details = await call.code(), await call.details()
    assert (texts, code, details) == ("w0,w1,w2", grpc.StatusCode.OK, "")


@pytest.mark.parametrize("where", ["call", "client"])
async def test_compression_per_call_or_per_client(echo: tuple[str, Echo], where: str) -> None:
    address, _ = echo
    gzip = grpc.Compression.Gzip
    client = micro.Client(compression=gzip if where == "client" else None)
    async with Relay(address) as relay, client:
        options = direct(relay.address, compression=gzip if where == "call" else None)
        reply = await echo_micro.EchoClient("echo", client, options=options).get(
            Req(text="a" * BIG)
        )
    assert len(reply.text) == BIG
    assert relay.up < BIG // 10, relay.up  # the request went compressed


async def test_channel_options_and_keepalive_reach_the_channel(echo: tuple[str, Echo]) -> None:
    address, _ = echo
    agent = ("grpc.primary_user_agent", "probe/1")
    async with micro.Client(keepalive=30.0, options=(agent,)) as client:
        stub = echo_micro.EchoClient("echo", client, options=direct(address))
        reply = await stub.get(Req())
    assert reply.metadata["user-agent"].startswith("probe/1")


def test_client_options_are_checked() -> None:
    with pytest.raises(ValueError, match="keepalive"):
        micro.Client(keepalive=0)


@pytest.fixture
def silent() -> Iterator[str]:
    """A loopback port that takes TCP connections and never speaks HTTP/2: a call
    there waits for its connection until something gives up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_deadline_that_runs_out_while_connecting_is_deadline_exceeded(
    silent: str, blocking: bool
) -> None:
    # Put must not run twice, so it waits for a connection first; 0.3 s runs out in
    # that wait, well before the 2 s a connection may take.
    request = Req(text="x")
    if blocking:

        def run() -> None:
            with micro.Client() as client:
                echo_micro.EchoSyncClient("echo", client, options=direct(silent)).put(
                    request, timeout=0.3
                )

        with pytest.raises(errors.DeadlineExceeded):
            await asyncio.to_thread(run)
    else:
        async with micro.Client() as client:
            with pytest.raises(errors.DeadlineExceeded):
                await echo_micro.EchoClient("echo", client, options=direct(silent)).put(
                    request, timeout=0.3
                )


class Stalled(MemoryRegistry):
    """A registry whose lookups never answer."""

    async def get_service(self, name: str) -> list[Service]:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_deadline_that_runs_out_while_looking_up_is_deadline_exceeded(
    blocking: bool,
) -> None:
    client = micro.Client(Stalled())
    try:
        with pytest.raises(errors.DeadlineExceeded, match="looking up service 'echo'"):
            await call(client, blocking)
    finally:
        await client.close()


async def call(client: micro.Client, blocking: bool) -> echo_pb2.EchoReply:
    """Get through the async or the blocking stub (in a thread), with 0.3 s to go."""
    if blocking:
        stub = echo_micro.EchoSyncClient("echo", client)
        return await asyncio.to_thread(stub.get, Req(), timeout=0.3)
    return await echo_micro.EchoClient("echo", client).get(Req(), timeout=0.3)
