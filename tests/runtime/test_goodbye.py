"""A forged (or mistaken) mDNS goodbye for a live node, over 127.0.0.1.

The probe: one goodbye packet made running clients answer ServiceNotFound for 90 s
and more, while fresh clients still found the node. A client connected to the node
and hearing from it keeps calling it until it stops answering; one that was not
asks the network again and finds it once the withdrawn node's tombstone is over.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import echo_micro
import echo_pb2
import pytest
from registry_support import loopback_multicast, next_event, summary
from runtime_support import Echo
from zeroconf import Zeroconf, const
from zeroconf._dns import DNSText
from zeroconf._protocol.outgoing import DNSOutgoing

import micro
from micro import errors
from micro.client import RELOOKUP
from micro.registry import EventType, MdnsRegistry
from micro.registry.mdns import TOMBSTONE_SECONDS

pytestmark = pytest.mark.backend

CONFIG = micro.Config(registry="mdns", register_ttl=30.0, register_interval=10.0)
Req = echo_pb2.EchoRequest


@pytest.fixture
async def registries() -> AsyncIterator[tuple[MdnsRegistry, MdnsRegistry, MdnsRegistry]]:
    """The node's registry and two readers', each its own zeroconf as separate
    processes would have; closed after the test."""
    reason = loopback_multicast()
    if reason is not None:
        pytest.skip(reason)
    opened = (MdnsRegistry(), MdnsRegistry(), MdnsRegistry())
    yield opened
    for registry in opened:
        await registry.close()


async def forge_goodbye(writer: MdnsRegistry) -> None:
    """One goodbye packet (TTL 0) for ``writer``'s one node, from another responder,
    as the probe sent: the record's data exactly, nothing announced before it."""
    (published,) = writer._published.values()
    info = published.info
    goodbye = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
    record = DNSText(
        info.name, const._TYPE_TXT, const._CLASS_IN | const._CLASS_UNIQUE, 0, info.text
    )
    goodbye.add_answer_at_time(record, 0)
    raw = await asyncio.to_thread(Zeroconf, interfaces=["127.0.0.1"])
    try:
        await asyncio.to_thread(raw.send, goodbye)
    finally:
        await asyncio.to_thread(raw.close)


async def cache_follows(client: micro.Client, name: str, nodes: int) -> None:
    """Until the client's cache lists ``nodes`` nodes of ``name``: its watch task runs
    after the reader's event, with no event of its own to await (bounded poll)."""
    deadline = time.monotonic() + 5
    while sum(len(s.nodes) for s in client.registry.cached(name) or ()) != nodes:
        assert time.monotonic() < deadline, "the client's cache never followed the registry"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
async def test_a_forged_goodbye_does_not_blind_a_client_calling_the_node(
    registries: tuple[MdnsRegistry, MdnsRegistry, MdnsRegistry], blocking: bool
) -> None:
    writer, reader, _ = registries
    name = f"echo-{uuid.uuid4().hex[:12]}"
    svc = micro.Service(name, registry=writer, config=CONFIG)
    svc.handle(Echo(svc.id))
    await svc.start()
    stopped = False
    async with micro.Client(reader, config=CONFIG) as client:
        try:
            if blocking:  # from a thread of its own, as a blocking program calls
                sync_echo = echo_micro.EchoSyncClient(name, client)

                async def put() -> echo_pb2.EchoReply:
                    return await asyncio.to_thread(sync_echo.put, Req(), timeout=5)
            else:
                echo = echo_micro.EchoClient(name, client)

                async def put() -> echo_pb2.EchoReply:
                    return await echo.put(Req(), timeout=5)

            assert (await put()).node == svc.id  # connected, answering
            watch = reader.watch(name)
            await forge_goodbye(writer)
            # The goodbye is believed by the registry (1 s: one packet on loopback, with
            # room for a loaded machine)...
            assert summary(await next_event(watch, 1.0)) == (EventType.DELETE, name, (svc.id,))
            await cache_follows(client, name, 0)
            # ...but not by the client, which is hearing from the node.
            for _ in range(20):
                assert (await put()).node == svc.id
            await svc.stop(grace=0)
            stopped = True
            # Once the node stops answering, it is dropped: a call or two fail on it
            # (a Put cannot connect, so it is not sent: UNAVAILABLE, or DEADLINE_EXCEEDED
            # once its retries to connect have used its deadline), then it is not found.
            with pytest.raises(
                (errors.Unavailable, errors.DeadlineExceeded, errors.ServiceNotFound)
            ):
                await put()
            with pytest.raises(errors.ServiceNotFound):
                await put()
            assert client._kept == {}
        finally:
            if not stopped:
                await svc.stop(grace=0)


async def test_a_client_told_a_node_left_asks_again_and_finds_it(
    registries: tuple[MdnsRegistry, MdnsRegistry, MdnsRegistry],
) -> None:
    writer, reader, _ = registries
    name = f"echo-{uuid.uuid4().hex[:12]}"
    svc = micro.Service(name, registry=writer, config=CONFIG)
    svc.handle(Echo(svc.id))
    await svc.start()
    try:
        async with micro.Client(reader, config=CONFIG) as client:
            echo = echo_micro.EchoClient(name, client)
            await client.registry.get_service(name)  # known to the client, never called
            await cache_follows(client, name, 1)
            await forge_goodbye(writer)
            await cache_follows(client, name, 0)
            with pytest.raises(errors.ServiceNotFound):
                await echo.put(Req(), timeout=5)
            # Copies of a withdrawn node are ignored for TOMBSTONE_SECONDS; after that,
            # the next lookup (one per RELOOKUP) is answered by the live node. 3 s more
            # for the query's round trip and wake-ups on a loaded machine.
            deadline = time.monotonic() + TOMBSTONE_SECONDS + RELOOKUP + 3
            while True:
                try:
                    assert (await echo.put(Req(), timeout=5)).node == svc.id
                    break
                except errors.ServiceNotFound:
                    assert time.monotonic() < deadline, "the node was never found again"
                    await asyncio.sleep(RELOOKUP / 4)  # pacing the calls, not waiting on them
    finally:
        await svc.stop(grace=0)
