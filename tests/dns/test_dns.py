"""DnsRegistry against a real DNS server (dnsmasq), and a real call found through it.
Of the registry contract (registry_contract) a read-only registry shares the
lookups; what it watches is DNS's own, below."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator

import echo_micro
import echo_pb2
import pytest
from dns_support import DOMAIN, Start, free_udp_port
from echo_node import Echo
from registry_contract import check_lookups_answer_for_the_name_asked

import micro
from micro.registry import MemoryRegistry
from micro.registry.base import Event, EventType, Node, ReadOnly, RegistryError, Service
from micro.registry.dns import DnsRegistry, system_nameservers

pytestmark = pytest.mark.backend

INTERVAL = 0.2
WAIT = 10.0  # bound on awaiting one event; the re-resolve interval is far shorter


def registry_for(address: str, *, timeout: float = 2.0) -> DnsRegistry:
    return DnsRegistry(domain=DOMAIN, nameservers=[address], interval=INTERVAL, timeout=timeout)


def nodes(*addresses: str) -> tuple[Node, ...]:
    return tuple(Node(a, a) for a in addresses)


async def next_event(events: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(events.__anext__(), WAIT)


async def test_srv_records_give_their_ports(dns_server: Start) -> None:
    server = dns_server(
        hosts={"n1": ["127.0.0.1"], "n2": ["127.0.0.2", "::1"]},
        srv=[
            f"_grpc._tcp.greeter.{DOMAIN},n1.{DOMAIN},7001",
            f"_grpc._tcp.greeter.{DOMAIN},n2.{DOMAIN},7002",
        ],
    )
    registry = registry_for(server.address)
    services = await registry.get_service("greeter")
    assert services == [
        Service("greeter", nodes=nodes("127.0.0.1:7001", "127.0.0.2:7002", "[::1]:7002"))
    ]


async def test_without_srv_a_and_aaaa_records_get_the_default_port(dns_server: Start) -> None:
    server = dns_server(hosts={"echo": ["127.0.0.3", "127.0.0.4", "::1"]})
    registry = DnsRegistry(domain=DOMAIN, nameservers=[server.address], port=9000)
    assert await registry.get_service("echo") == [
        Service("echo", nodes=nodes("127.0.0.3:9000", "127.0.0.4:9000", "[::1]:9000"))
    ]


async def test_unknown_name_is_no_service(dns_server: Start) -> None:
    server = dns_server(hosts={"echo": ["127.0.0.3"], "echo-other": ["127.0.0.4", "::1"]})
    published = {"echo": {"127.0.0.3:50051"}, "echo-other": {"127.0.0.4:50051", "[::1]:50051"}}
    await check_lookups_answer_for_the_name_asked(registry_for(server.address), published)


async def test_srv_target_without_address_gives_no_node(dns_server: Start) -> None:
    server = dns_server(srv=[f"_grpc._tcp.greeter.{DOMAIN},gone.{DOMAIN},7001"])
    assert await registry_for(server.address).get_service("greeter") == []


async def test_refused_nameserver_is_a_registry_error_naming_it() -> None:
    address = f"127.0.0.1:{free_udp_port()}"  # nobody listens: ICMP port unreachable
    with pytest.raises(RegistryError, match=address):
        await registry_for(address).get_service("echo")


async def test_silent_nameserver_is_a_registry_error_after_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        registry = DnsRegistry(domain=DOMAIN, nameservers=[address], timeout=0.1, attempts=1)
        with pytest.raises(RegistryError, match=f"{address}: no answer within 0.1s"):
            await registry.get_service("echo")


async def test_a_second_nameserver_answers_when_the_first_fails(dns_server: Start) -> None:
    server = dns_server(hosts={"echo": ["127.0.0.3"]})
    dead = f"127.0.0.1:{free_udp_port()}"
    registry = DnsRegistry(domain=DOMAIN, nameservers=[dead, server.address], port=1)
    assert await registry.get_service("echo") == [Service("echo", nodes=nodes("127.0.0.3:1"))]


async def test_watch_reports_added_and_removed_records(dns_server: Start) -> None:
    server = dns_server(hosts={"echo": ["127.0.0.3"]})
    registry = Observed(server.address)
    events = registry.watch()
    await registry.get_service("echo")  # watched from now on
    steps = [
        ({"echo": ["127.0.0.3", "127.0.0.4"]}, EventType.CREATE, "127.0.0.4:50051"),
        ({"echo": ["127.0.0.4"]}, EventType.DELETE, "127.0.0.3:50051"),
        ({}, EventType.DELETE, "127.0.0.4:50051"),  # NXDOMAIN: every node goes
    ]
    for hosts, kind, address in steps:
        await server.reload(hosts)
        changed = registry.resolves
        assert await next_event(events) == Event(kind, Service("echo", nodes=nodes(address)))
        assert registry.resolves <= changed + 1, "not seen by the next re-resolve"
    await registry.close()


async def test_watch_follows_srv_targets_moving(dns_server: Start) -> None:
    server = dns_server(
        hosts={"n1": ["127.0.0.1"]}, srv=[f"_grpc._tcp.greeter.{DOMAIN},n1.{DOMAIN},7001"]
    )
    registry = registry_for(server.address)
    events = registry.watch("greeter")
    assert await registry.get_service("greeter") == [
        Service("greeter", nodes=nodes("127.0.0.1:7001"))
    ]
    await server.reload({"n1": ["127.0.0.5"]})
    assert [await next_event(events), await next_event(events)] == [
        Event(EventType.DELETE, Service("greeter", nodes=nodes("127.0.0.1:7001"))),
        Event(EventType.CREATE, Service("greeter", nodes=nodes("127.0.0.5:7001"))),
    ]


async def test_watch_of_one_name_ignores_others(dns_server: Start) -> None:
    server = dns_server(hosts={"a": ["127.0.0.1"], "b": ["127.0.0.2"]})
    registry = registry_for(server.address)
    events = registry.watch("b")
    await registry.get_service("a")
    await registry.get_service("b")
    await server.reload({"a": ["127.0.0.1", "127.0.0.9"], "b": ["127.0.0.2", "127.0.0.8"]})
    event = await next_event(events)
    assert event == Event(EventType.CREATE, Service("b", nodes=nodes("127.0.0.8:50051")))


async def test_watch_raises_when_the_server_goes_away(dns_server: Start) -> None:
    server = dns_server(hosts={"echo": ["127.0.0.3"]})
    registry = registry_for(server.address, timeout=0.2)
    events = registry.watch()
    await registry.get_service("echo")
    server.stop()
    with pytest.raises(RegistryError, match=server.address):
        await next_event(events)


async def test_watch_ends_when_closed(dns_server: Start) -> None:
    server = dns_server(hosts={"echo": ["127.0.0.3"]})
    registry = registry_for(server.address)
    events = registry.watch()
    await registry.get_service("echo")
    await registry.close()
    with pytest.raises(StopAsyncIteration):
        await next_event(events)


async def test_cannot_register() -> None:
    registry = DnsRegistry(domain=DOMAIN, nameservers=["127.0.0.1"])
    with pytest.raises(ReadOnly, match="DNS registry is read-only"):
        await registry.register(Service("echo", nodes=nodes("127.0.0.1:1")), ttl=10)
    with pytest.raises(ReadOnly, match="DNS registry is read-only"):
        await registry.deregister(Service("echo", nodes=nodes("127.0.0.1:1")))


async def test_a_service_runs_on_the_dns_registry_published_by_dns(
    dns_server: Start, unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # As in Kubernetes with MICRO_REGISTRY=dns: DNS publishes the pod, the service
    # registers nowhere, starts, answers calls found through DNS and stops quietly.
    server = dns_server(
        hosts={"pod1": ["127.0.0.1"]}, srv=[f"_grpc._tcp.echo.{DOMAIN},pod1.{DOMAIN},{unused_port}"]
    )
    config = dataclasses.replace(CONFIG, server_address=f"127.0.0.1:{unused_port}")
    svc = micro.Service("echo", registry=registry_for(server.address), config=config)
    svc.handle(Echo(svc.id))
    with caplog.at_level(logging.WARNING):
        await svc.start()
        client = micro.Client(registry=registry_for(server.address), config=CONFIG)
        try:
            reply = await echo_micro.EchoClient("echo", client).get(echo_pb2.EchoRequest())
        finally:
            await client.close()
        await svc.stop(grace=0)
    assert reply.node == svc.id
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_nameservers_from_resolv_conf(tmp_path: pytest.TempPathFactory) -> None:
    conf = tmp_path / "resolv.conf"  # type: ignore[operator]
    conf.write_text("# comment\nnameserver 10.0.0.1\nsearch x\nnameserver fe80::1%eth0\n")
    assert system_nameservers(str(conf)) == ["10.0.0.1", "[fe80::1]"]


CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)


async def echo_node(address: str) -> micro.Service:
    """A running echo node; the registry it registers with is not the one searched."""
    config = dataclasses.replace(CONFIG, server_address=address)
    svc = micro.Service("echo", registry=MemoryRegistry(), config=config)
    svc.handle(Echo(svc.id))
    await svc.start()
    return svc


class Observed(DnsRegistry):
    """Counts resolves (each name looked up, by a lookup or a watch's round), and
    reports each answer once its consumer (the client's cache) has applied it: a
    watch event when the consumer asks for the next, a lookup (the cache's resync
    after a failed watch) as soon as the caller has stored it.

    A change is seen by the first resolve that begins after it: one in flight as it
    happens may miss it (or be refused while dnsmasq restarts), the next may not. So
    once a change is made, at most one more resolve may begin before it is seen: a
    bound in resolves, not in seconds, which a busy machine cannot stretch."""

    def __init__(self, address: str) -> None:
        super().__init__(domain=DOMAIN, nameservers=[address], interval=INTERVAL)
        self.applied: asyncio.Queue[object] = asyncio.Queue()
        self.resolves = 0

    async def _resolve(self, name: str) -> frozenset[str]:
        self.resolves += 1
        return await super()._resolve(name)

    async def get_service(self, name: str) -> list[Service]:
        services = await super().get_service(name)
        # Runs once the caller's step that receives ``services`` (and stores them) ends.
        asyncio.get_running_loop().call_soon(self.applied.put_nowait, services)
        return services

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        return self._tee(super().watch(service))

    async def _tee(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        async for event in events:
            yield event
            self.applied.put_nowait(event)

    async def until(self, client: micro.Client, name: str, want: set[str]) -> float:
        """Seconds until the addresses ``client`` holds for ``name`` are ``want``,
        checked after each answer it applies (each wait bounded by ``WAIT``)."""
        start = time.monotonic()
        while {n.address for s in client.registry.cached(name) or [] for n in s.nodes} != want:
            await asyncio.wait_for(self.applied.get(), WAIT)
        return time.monotonic() - start


async def test_a_call_through_an_srv_record(dns_server: Start) -> None:
    svc = await echo_node("127.0.0.1:0")
    try:
        port = svc.address.rsplit(":", 1)[1]
        server = dns_server(
            hosts={"node1": ["127.0.0.1"]}, srv=[f"_grpc._tcp.echo.{DOMAIN},node1.{DOMAIN},{port}"]
        )
        client = micro.Client(registry=registry_for(server.address), config=CONFIG)
        try:
            reply = await echo_micro.EchoClient("echo", client).get(
                echo_pb2.EchoRequest(text="hello")
            )
        finally:
            await client.close()
        assert (reply.text, reply.node) == ("hello", svc.id)
    finally:
        await svc.stop(grace=0)


async def test_the_client_follows_records_to_another_node(dns_server: Start) -> None:
    first = await echo_node("127.0.0.1:0")
    port = int(first.address.rsplit(":", 1)[1])
    second = await echo_node(f"127.0.0.2:{port}")  # same port, the A fallback's default
    try:
        server = dns_server(hosts={"echo": ["127.0.0.1"]})
        registry = Observed(server.address)
        registry.port = port
        client = micro.Client(registry=registry, config=CONFIG)
        echo = echo_micro.EchoClient("echo", client)
        try:
            assert (await echo.get(echo_pb2.EchoRequest())).node == first.id
            await server.reload({"echo": ["127.0.0.2"]})
            changed = registry.resolves
            elapsed = await registry.until(client, "echo", {second.address})
            assert registry.resolves <= changed + 1, "not seen by the next re-resolve"
            assert (await echo.get(echo_pb2.EchoRequest())).node == second.id
        finally:
            await client.close()
    finally:
        await first.stop(grace=0)
        await second.stop(grace=0)
    print(f"\nA record change in the client's node set after {elapsed * 1000:.0f} ms")


async def test_the_client_follows_a_changed_srv_set(dns_server: Start) -> None:
    # dnsmasq reads SRV records only at start: the set changes by a restart on the
    # same port (see dns_support). A re-resolve that meets the restart is refused;
    # the client's cache then looks up again: the next resolve, which sees the set.
    first, second = await echo_node("127.0.0.1:0"), await echo_node("127.0.0.1:0")
    ports = {svc.id: svc.address.rsplit(":", 1)[1] for svc in (first, second)}

    def srv(*nodes: micro.Service) -> list[str]:
        return [f"_grpc._tcp.echo.{DOMAIN},pod.{DOMAIN},{ports[n.id]}" for n in nodes]

    server = dns_server(hosts={"pod": ["127.0.0.1"]}, srv=srv(first))
    registry = Observed(server.address)
    client = micro.Client(registry=registry, config=CONFIG)
    echo = echo_micro.EchoClient("echo", client)
    elapsed = []
    try:
        assert (await echo.get(echo_pb2.EchoRequest())).node == first.id
        for nodes in [(first, second), (second,)]:
            await server.restart(srv(*nodes))
            changed = registry.resolves
            elapsed.append(await registry.until(client, "echo", {n.address for n in nodes}))
            assert registry.resolves <= changed + 1, "not seen by the next re-resolve"
        assert {(await echo.get(echo_pb2.EchoRequest())).node for _ in range(5)} == {second.id}
    finally:
        await client.close()
        await first.stop(grace=0)
        await second.stop(grace=0)
    shown = ", ".join(f"{e * 1000:.0f}" for e in elapsed)
    print(f"\nSRV set changes in the client's node set after {shown} ms")


async def test_srv_saying_no_such_service_is_no_service(dns_server: Start) -> None:
    # Target "." (RFC 2782): not the A fallback, even though the name has an address.
    server = dns_server(hosts={"none": ["127.0.0.3"]}, srv=[f"_grpc._tcp.none.{DOMAIN}"])
    assert await registry_for(server.address).get_service("none") == []
