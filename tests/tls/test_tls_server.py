"""A service with a certificate serves TLS only: raw grpc clients show what the server
accepts, refuses, and that new certificate files are served without a restart."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import echo_micro
import echo_pb2
import grpc
import grpc.aio
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpclib.client import Channel, UnaryUnaryMethod
from grpclib.config import Configuration
from grpclib.exceptions import StreamTerminatedError
from runtime_support import Echo
from tls_support import Authority, Pair

import micro
from micro.registry import MemoryRegistry
from micro.tls import TLS_KEY, Tls, aio_channel

Start = Callable[..., Awaitable[micro.Service]]
# A refused handshake fails the call at once (UNAVAILABLE); the bound only stops a
# hang from passing unnoticed on a loaded machine.
TIMEOUT = 10


@pytest.fixture
async def start(authority: Authority) -> AsyncIterator[Start]:
    started: list[micro.Service] = []

    async def run(pair: Pair, **options: object) -> micro.Service:
        svc = micro.Service(
            "echo", registry=MemoryRegistry(), config=authority.config(pair, **options)
        )
        svc.handle(Echo(svc.id))
        await svc.start()
        started.append(svc)
        return svc

    yield run
    for svc in started:
        await svc.stop(grace=0)


async def get(address: str, tls: Tls | None, name: str = "echo") -> str:
    """One Echo.Get over a grpc channel (TLS verifying ``name`` unless ``tls`` is None);
    the node id, or the status code and details of the failure."""
    async with aio_channel(address, name, tls, tls is not None) as channel:
        call = channel.unary_unary(
            echo_micro.EchoHandler.__service__.methods[0].path,
            request_serializer=echo_pb2.EchoRequest.SerializeToString,
            response_deserializer=echo_pb2.EchoReply.FromString,
        )
        try:
            reply = await call(echo_pb2.EchoRequest(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as e:
            return f"{e.code().name}: {e.details()}"
        return str(reply.node)


async def test_mutual_tls_is_served_and_the_entry_says_so(
    start: Start, authority: Authority
) -> None:
    svc = await start(authority.issue("echo"))
    assert await get(svc.address, authority.tls()) == svc.id
    assert svc.record.nodes[0].metadata[TLS_KEY] == "echo"


async def test_what_the_server_refuses(start: Start, authority: Authority) -> None:
    svc = await start(authority.issue("echo"))
    other = Authority(authority.where / "other", "other-ca")
    # a plaintext client: refused, not hung
    assert (await get(svc.address, None)).startswith("UNAVAILABLE")
    # no client certificate (the server has a CA: mutual TLS)
    assert (await get(svc.address, Tls(ca=str(authority.ca)))).startswith("UNAVAILABLE")
    # a client certificate another CA signed, a client which also does not trust this server
    assert "unable to get local issuer certificate" in await get(svc.address, other.tls())
    # the certificate does not carry the name called
    client = authority.tls()
    assert "Hostname Verification Check failed" in await get(svc.address, client, "payments")
    assert await get(svc.address, client) == svc.id


async def test_an_expired_server_certificate_is_named(authority: Authority) -> None:
    pair = authority.issue("echo", expired=True)  # micro refuses to serve it: plain grpc does
    server = grpc.aio.server()
    micro.mount(server, Echo("stale"))
    key_cert = [(pair.key.read_bytes(), pair.cert.read_bytes())]
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(key_cert))
    await server.start()
    try:
        assert "certificate has expired" in await get(f"127.0.0.1:{port}", authority.tls())
    finally:
        await server.stop(None)


async def test_a_rotation_to_bad_files_keeps_the_last_good(
    start: Start, authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    svc = await start(authority.issue("echo"))
    authority.issue("echo", expired=True)  # written over the served files
    assert await get(svc.address, authority.tls()) == svc.id
    assert "TLS files changed but cannot be used, keeping the last good" in caplog.text
    assert "expired at" in caplog.text


async def test_new_files_are_served_without_a_restart(start: Start, authority: Authority) -> None:
    pair = authority.issue("echo")
    svc = await start(pair)
    successor = Authority(authority.where / "next", "next-ca")
    renewed = successor.issue("echo")
    client = successor.tls()
    assert "unable to get local issuer certificate" in await get(svc.address, client)
    # rotate: the server's certificate and key and the CA it trusts, all from the successor
    pair.key.write_bytes(renewed.key.read_bytes())
    pair.cert.write_bytes(renewed.cert.read_bytes())
    authority.ca.write_bytes(successor.ca.read_bytes())
    assert await get(svc.address, client) == svc.id


async def test_reflection_can_be_turned_off(start: Start, authority: Authority) -> None:
    svc = await start(authority.issue("echo"), reflection=False)
    tls = authority.tls()
    async with aio_channel(svc.address, "echo", tls, True) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in stub.ServerReflectionInfo(iter([ask]), timeout=TIMEOUT):
                pass
    assert failed.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_another_grpc_implementation_calls_with_ca_cert_and_key(
    start: Start, authority: Authority
) -> None:
    """What grpcurl's -cacert/-cert/-key/-servername do, by grpclib over Python's own
    TLS (no grpcurl package exists on PyPI or in Debian): micro's TLS is plain gRPC
    over TLS, verified by any client; one without a client certificate is refused."""
    svc = await start(authority.issue("echo"))
    pair = authority.issue("grpclib-client")
    host, _, port = svc.address.rpartition(":")
    get = echo_micro.EchoHandler.__service__.methods[0].path

    async def call(context: ssl.SSLContext) -> str:
        config = Configuration(ssl_target_name_override="echo")
        channel = Channel(host, int(port), ssl=context, config=config)
        try:
            method: UnaryUnaryMethod[echo_pb2.EchoRequest, echo_pb2.EchoReply] = UnaryUnaryMethod(
                channel, get, echo_pb2.EchoRequest, echo_pb2.EchoReply
            )
            return (await method(echo_pb2.EchoRequest(), timeout=TIMEOUT)).node
        finally:
            channel.close()

    context = ssl.create_default_context(cafile=str(authority.ca))
    context.set_alpn_protocols(["h2"])
    without = ssl.create_default_context(cafile=str(authority.ca))
    without.set_alpn_protocols(["h2"])
    context.load_cert_chain(str(pair.cert), str(pair.key))
    assert await call(context) == svc.id
    # TLS 1.3: the client's handshake ends before the server checks its certificate,
    # so the refusal arrives as the connection closing
    with pytest.raises((StreamTerminatedError, ssl.SSLError, ConnectionError)):
        await call(without)
