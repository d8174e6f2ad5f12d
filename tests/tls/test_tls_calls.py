"""Mutual TLS between micro services found through a registry: calls verify the
name of the service called, so an entry pointing elsewhere gets no call and no
header; a client never dials a TLS node in plaintext; rotation under load."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import echo_micro
import echo_pb2
import grpc
import grpc.aio
import pytest
from etcd_support import EtcdServer, running
from registry_support import loopback_multicast
from runtime_support import Echo
from tls_support import Authority, Pair

import micro
from micro import errors
from micro.registry import MdnsRegistry, MemoryRegistry, Node, Registry, Service
from micro.registry.etcd import EtcdRegistry
from micro.tls import TLS_KEY

Req = echo_pb2.EchoRequest
# A refused handshake fails an attempt at once; the bound only turns a hang into a
# failure on a loaded machine.
TIMEOUT = 10
Start = Callable[..., Awaitable[tuple[micro.Service, Echo]]]


class Caller(Echo):
    """Echo answering with what the handler knows of its caller."""

    async def get(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:
        reply = await super().get(request, ctx)
        reply.text = ",".join(ctx.identity.names)
        return reply


@pytest.fixture
async def start(authority: Authority) -> AsyncIterator[Start]:
    """``await start(name, registry)``: a TLS node of ``name`` (its certificate naming
    it, the authority's CA trusted), stopped after the test."""
    started: list[micro.Service] = []

    async def run(
        name: str, registry: Registry, pair: Pair | None = None
    ) -> tuple[micro.Service, Echo]:
        config = authority.config(pair or authority.issue(name), register_ttl=30.0)
        svc = micro.Service(name, registry=registry, config=config)
        handler = Caller(svc.id, svc.client)
        svc.handle(handler)
        await svc.start()
        started.append(svc)
        return svc, handler

    yield run
    for svc in started:
        await svc.stop(grace=0)


async def calls_verified(
    start: Start, authority: Authority, server: Registry, reader: Registry
) -> None:
    name = f"echo-{uuid.uuid4().hex[:8]}"
    svc, handler = await start(name, server)
    async with micro.Client(reader, config=authority.config(authority.issue("caller"))) as client:
        reply = await echo_micro.EchoClient(name, client).get(Req(), timeout=TIMEOUT)
    assert (reply.node, reply.text) == (svc.id, "caller")  # the server saw the client's name
    assert handler.received == 1


@pytest.mark.backend
async def test_mutual_tls_through_mdns(start: Start, authority: Authority) -> None:
    reason = loopback_multicast()
    if reason is not None:
        pytest.skip(reason)
    server, reader = MdnsRegistry(), MdnsRegistry()  # two, as two processes would have
    try:
        await calls_verified(start, authority, server, reader)
    finally:
        await server.close()
        await reader.close()


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    with running(tmp_path) as etcd:
        yield etcd


@pytest.mark.backend
async def test_mutual_tls_through_etcd(
    start: Start, authority: Authority, etcd_server: EtcdServer
) -> None:
    server = EtcdRegistry([etcd_server.endpoint], timeout=10.0)
    reader = EtcdRegistry([etcd_server.endpoint], timeout=10.0)
    try:
        await calls_verified(start, authority, server, reader)
    finally:
        await server.close()
        await reader.close()


async def test_a_forged_entry_gets_no_call_and_no_header(
    start: Start, authority: Authority
) -> None:
    """An entry for echo pointing at a server whose certificate names another service
    (signed by the same CA): the handshake fails, so nothing reaches that server."""
    registry = MemoryRegistry()
    node, payments = await start("payments", registry)
    forged = Service("echo", nodes=(Node("forged", node.address, {TLS_KEY: "echo"}),))
    await registry.register(forged, ttl=3600)
    config = authority.config(authority.issue("caller"), auth_token="caller-secret")
    async with micro.Client(registry, config=config) as client:
        with pytest.raises(errors.Unavailable, match="Hostname Verification Check failed"):
            await echo_micro.EchoClient("echo", client).get(Req(), timeout=TIMEOUT)
        # and the real payments node still answers the same client
        reply = await echo_micro.EchoClient("payments", client).get(Req(), timeout=TIMEOUT)
    assert reply.node  # answered
    assert payments.received == 1  # only the genuine call


async def test_a_client_with_a_ca_never_dials_plaintext(authority: Authority) -> None:
    """An entry without the TLS mark, pointing at a plaintext server: a client that
    trusts a CA calls in TLS only, so it leaves the node out, and the server gets
    nothing (a direct call to the address would be TLS too)."""
    registry = MemoryRegistry()
    plain = micro.Service("echo", registry=registry, config=micro.Config(registry="memory"))
    handler = Echo(plain.id)
    plain.handle(handler)
    await plain.start()
    try:
        config = authority.config(authority.issue("caller"), auth_token="caller-secret")
        async with micro.Client(registry, config=config) as client:
            with pytest.raises(errors.Unavailable, match="no node of service 'echo' serves TLS"):
                await echo_micro.EchoClient("echo", client).get(Req(), timeout=TIMEOUT)
    finally:
        await plain.stop(grace=0)
    assert handler.received == 0


async def test_a_plaintext_client_gets_a_clear_error_from_a_tls_node(
    start: Start, authority: Authority
) -> None:
    """The node's entry says TLS: a client without TLS settings tries TLS with the
    system's roots, which do not know this CA (no hang, no plaintext attempt)."""
    registry = MemoryRegistry()
    await start("echo", registry)
    async with micro.Client(registry, config=micro.Config(registry="memory")) as client:
        with pytest.raises(errors.Unavailable, match="certificate"):
            await echo_micro.EchoClient("echo", client).get(Req(), timeout=TIMEOUT)


ROTATIONS = 3  # certificate changes during the load
CALLERS = 8  # calls at once on each client
CALLS = 25  # calls per caller


async def test_rotation_under_load_fails_no_call(start: Start, authority: Authority) -> None:
    """The server's certificate is replaced, by one another CA signed, while calls run:
    calls on the open connection go on, and a client trusting only the new CA
    connects (so the new certificate is served), with no call failing."""
    registry = MemoryRegistry()
    pair = authority.issue("echo")
    _, handler = await start("echo", registry, pair)
    caller = authority.issue("caller")  # the server goes on trusting the first CA
    served = authority.ca
    failures: list[BaseException] = []

    async def load(client: micro.Client) -> None:
        echo = echo_micro.EchoClient("echo", client)
        for _ in range(CALLS):
            try:
                await echo.get(Req(), timeout=TIMEOUT)
            except errors.Error as e:
                failures.append(e)

    for number in range(ROTATIONS):
        trusting = micro.Config(
            registry="memory",
            tls_cert=str(caller.cert),
            tls_key=str(caller.key),
            tls_ca=str(served),
        )
        async with micro.Client(registry, config=trusting) as old:
            await echo_micro.EchoClient("echo", old).get(Req(), timeout=TIMEOUT)  # connected
            running = [asyncio.create_task(load(old)) for _ in range(CALLERS)]
            successor = Authority(authority.where / f"next-{number}", f"next-{number}")
            renewed = successor.issue("echo")
            pair.key.write_bytes(renewed.key.read_bytes())
            pair.cert.write_bytes(renewed.cert.read_bytes())
            served = successor.ca
            trusting = micro.Config(
                registry="memory",
                tls_cert=str(caller.cert),
                tls_key=str(caller.key),
                tls_ca=str(served),
            )
            async with micro.Client(registry, config=trusting) as new:
                running += [asyncio.create_task(load(new)) for _ in range(CALLERS)]
                await asyncio.gather(*running)
    assert failures == []
    assert handler.received == ROTATIONS * (1 + 2 * CALLERS * CALLS)


async def test_each_bad_certificate_says_which(start: Start, authority: Authority) -> None:
    registry = MemoryRegistry()
    await start("echo", registry)
    other = Authority(authority.where / "other", "other-ca")
    stranger = other.issue("caller")
    cases = {
        # a mutual server closes on a client without a certificate: micro says so
        authority.config(None): "no client certificate",
        # the client does not trust the CA that signed the server
        other.config(stranger): "unable to get local issuer certificate",
    }
    for config, why in cases.items():
        async with micro.Client(registry, config=config) as client:
            with pytest.raises(errors.Unavailable, match=why):
                await echo_micro.EchoClient("echo", client).get(Req(), timeout=TIMEOUT)


async def test_an_expired_server_certificate_is_named(authority: Authority) -> None:
    """A server presenting an expired certificate (micro refuses to serve one; plain
    grpc does) is refused by the client with that reason."""
    pair = authority.issue("echo", expired=True)
    server = grpc.aio.server()
    micro.mount(server, Echo("stale"))
    key_cert = [(pair.key.read_bytes(), pair.cert.read_bytes())]
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(key_cert))
    await server.start()
    registry = MemoryRegistry()
    node = Node("stale", f"127.0.0.1:{port}", {TLS_KEY: "echo"})
    await registry.register(Service("echo", nodes=(node,)), ttl=3600)
    try:
        async with micro.Client(registry, config=authority.config(authority.issue("c"))) as c:
            with pytest.raises(errors.Unavailable, match="certificate has expired"):
                await echo_micro.EchoClient("echo", c).get(Req(), timeout=TIMEOUT)
    finally:
        await server.stop(None)


async def test_new_client_channels_present_new_files(start: Start, authority: Authority) -> None:
    """The client's certificate is replaced: channels opened after it present the new
    one (the server names its caller from the certificate it verified)."""
    registry = MemoryRegistry()
    await start("echo", registry)
    pair = authority.issue("caller-a", file="caller")
    config = authority.config(pair)
    async with micro.Client(registry, config=config) as client:
        assert (await echo_micro.EchoClient("echo", client).get(Req(), timeout=TIMEOUT)).text == (
            "caller-a"
        )
    authority.issue("caller-b", file="caller")  # written over the same files
    async with micro.Client(registry, config=config) as client:
        assert (await echo_micro.EchoClient("echo", client).get(Req(), timeout=TIMEOUT)).text == (
            "caller-b"
        )
