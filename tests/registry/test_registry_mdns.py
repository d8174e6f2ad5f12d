"""MdnsRegistry over 127.0.0.1: the registry contract (registry_contract), and what
is mDNS's own: between processes, expiry, malformed records, the event loop.

How fast a cold lookup finds a node, a goodbye arrives or a killed process's node
expires is printed, not asserted: events are awaited, bounded only against a hang.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import sys
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from registry_contract import *  # noqa: F403  (the contract every backend passes, run here)
from registry_contract import WAIT, Backend, check_close_ends_watches_and_later_calls_say_so
from registry_support import next_event, service, summary
from zeroconf import ServiceInfo, Zeroconf

from micro.logs import BURST
from micro.registry import Endpoint, EventType, MdnsRegistry, RegistryError

pytestmark = pytest.mark.backend

PEER = Path(__file__).with_name("mdns_peer.py")
ROOT = Path(__file__).parents[2]
C, U, D = EventType.CREATE, EventType.UPDATE, EventType.DELETE
Open = Callable[..., MdnsRegistry]


class Peer:
    """``mdns_peer.py`` in its own process; it speaks one JSON object per line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def read(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next message; the default bound is for the first, which comes once a
        new Python process has imported micro and zeroconf (10 s was seen to be too
        short on a loaded machine)."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, "the peer exited"
        message: dict[str, Any] = json.loads(line)
        return message

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()


@pytest.fixture
def backend(mdns: Open) -> Backend:
    return Backend(mdns, ttl=1.0)


@pytest.fixture
async def peers(multicast: None) -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    started: list[Peer] = []

    async def start(*args: str) -> Peer:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PEER),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        started.append(Peer(process))
        return started[-1]

    yield start
    for peer in started:
        if peer.process.returncode is None:
            peer.process.kill()
        await asyncio.wait_for(peer.process.communicate(), 10)


async def test_a_later_client_finds_a_service_in_another_process(
    peers: Callable[..., Awaitable[Peer]], mdns: Open, name: str
) -> None:
    peer = await peers("serve", name, "peer-1", "30")
    assert await peer.read() == {"ready": "peer-1"}
    began = time.monotonic()
    services = await mdns().get_service(name)  # cold: waits for the answers
    elapsed = time.monotonic() - began
    assert [n.id for s in services for n in s.nodes] == ["peer-1"]
    assert services[0].nodes[0].metadata == {"peer": "yes"}
    print(f"\ncold lookup found another process's node in {elapsed * 1000:.0f} ms")


async def test_another_process_finds_a_service_registered_here(
    peers: Callable[..., Awaitable[Peer]], mdns: Open, name: str
) -> None:
    await mdns().register(service(name, "here-1"), 30)
    peer = await peers("find", name)
    found = await peer.read()
    assert found["nodes"] == ["here-1"]
    print(f"\nanother process's cold lookup found it in {found['elapsed'] * 1000:.0f} ms")


async def test_deregistration_reaches_another_process_by_a_goodbye(
    peers: Callable[..., Awaitable[Peer]], mdns: Open, name: str
) -> None:
    ttl = 30.0  # the node's TTL: WAIT is well within it, so the DELETE is no expiry
    peer = await peers("serve", name, "peer-1", str(ttl))
    await peer.read()
    registry = mdns()
    watch = registry.watch(name)
    assert summary(await next_event(watch, WAIT)) == (C, name, ("peer-1",))
    began = time.monotonic()
    await peer.send("deregister")
    assert summary(await next_event(watch, WAIT)) == (D, name, ("peer-1",))
    elapsed = time.monotonic() - began
    assert await registry.get_service(name) == []
    assert await peer.read() == {"deregistered": "peer-1"}
    print(f"\na goodbye from another process arrived in {elapsed * 1000:.0f} ms")


async def test_a_killed_process_expires_after_its_ttl(
    peers: Callable[..., Awaitable[Peer]], mdns: Open, name: str
) -> None:
    ttl = 2.0
    peer = await peers("serve", name, "peer-1", str(ttl))
    await peer.read()
    registry, marker = mdns(), mdns()
    watch = registry.watch(name)
    assert summary(await next_event(watch, WAIT)) == (C, name, ("peer-1",))

    # While the process lives, its node outlives any one TTL: peers ask, it answers.
    await asyncio.sleep(ttl * 1.5)  # real time passing a TTL is what is under test
    await marker.register(service(name, "marker"), 30)
    # Had peer-1 expired meanwhile, its DELETE would come before this.
    assert summary(await next_event(watch, WAIT)) == (C, name, ("marker",))

    peer.process.kill()  # SIGKILL: no goodbye
    began = time.monotonic()
    assert summary(await next_event(watch, ttl + WAIT)) == (D, name, ("peer-1",))
    elapsed = time.monotonic() - began
    assert [n.id for s in await registry.get_service(name) for n in s.nodes] == ["marker"]
    print(f"\na killed process's node (TTL {ttl} s) expired {elapsed:.2f} s after the kill")


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


async def test_malformed_entries_are_skipped_with_a_warning(
    mdns: Open, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "micro.registry")
    reader, writer = mdns(), mdns()
    watch = reader.watch(name)
    await reader.list_services()
    node = b'"node":{"id":"x","address":"127.0.0.1:9","metadata":{"k":1}}'
    garbage = {
        "not-json": txt(b"micro=1", b"enc=json", b"d0={not json"),
        "no-node": txt(b"micro=1", b"enc=json", b'd0={"name":"%s"}' % name.encode()),
        "bad-metadata": txt(b"micro=1", b"enc=json", b'd0={"name":"x",' + node + b"}"),
        "bad-zlib": txt(b"micro=1", b"enc=zlib", b"d0=not zlib"),
        "other-format": txt(b"micro=9", b"enc=json", b"d0={}"),
        "truncated": b"\x40micro=1",
        # The probe's payload: 200 KB of "[" (218 bytes compressed) made the JSON
        # parser recurse to death, a traceback per packet.
        "deep": txt(b"micro=1", b"enc=zlib", b"d0=" + zlib.compress(b"[" * 200_000, 9)),
    }
    tag = uuid.uuid4().hex[:8]
    infos = [
        ServiceInfo(
            "_micro._tcp.local.",
            f"garbage-{kind}-{tag}._micro._tcp.local.",
            port=9,
            properties=text,
            server=f"garbage-{tag}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        for kind, text in garbage.items()
    ]
    raw = await asyncio.to_thread(Zeroconf, interfaces=["127.0.0.1"])
    try:
        announcing = [
            asyncio.to_thread(raw.register_service, i, cooperating_responders=True) for i in infos
        ]
        await asyncio.gather(*announcing)
        valid = service(name, "good-1")
        await writer.register(valid, 30)  # announced after every piece of garbage
        assert summary(await next_event(watch, WAIT)) == (C, name, ("good-1",))
        assert await reader.get_service(name) == [valid]
    finally:
        await asyncio.to_thread(raw.close)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for kind in garbage:
        about = [w for w in warnings if f"garbage-{kind}-{tag}" in w]
        # Once by each registry (both saw it), however often it was announced.
        assert len(about) == 2, (kind, warnings)
    assert any(f"garbage-deep-{tag}" in w and "nested more than 16 deep" in w for w in warnings)


async def test_a_flood_of_malformed_entries_leaves_a_bounded_log(
    mdns: Open, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each malformed entry is warned about once (a changed text of it at DEBUG), and
    past a burst of them the rest go to DEBUG: many bad entries, a few lines."""
    caplog.set_level(logging.DEBUG, "micro.registry")
    reader, writer = mdns(), mdns()
    watch = reader.watch(name)
    await reader.list_services()
    tag = uuid.uuid4().hex[:8]
    count = 2 * BURST

    def garbage(i: int, version: bytes) -> ServiceInfo:
        return ServiceInfo(
            "_micro._tcp.local.",
            f"garbage-{i}-{tag}._micro._tcp.local.",
            port=9,
            properties=txt(b"micro=1", b"enc=json", b"d0={not json " + version),
            server=f"garbage-{tag}.local.",
            parsed_addresses=["127.0.0.1"],
        )

    raw = await asyncio.to_thread(Zeroconf, interfaces=["127.0.0.1"])
    try:
        announcing = [
            asyncio.to_thread(raw.register_service, garbage(i, b"1"), cooperating_responders=True)
            for i in range(count)
        ]
        await asyncio.gather(*announcing)
        await asyncio.to_thread(raw.update_service, garbage(0, b"2"))  # the first, changed
        valid = service(name, "good-1")
        await writer.register(valid, 30)  # announced after every piece of garbage
        assert summary(await next_event(watch, 1.0)) == (C, name, ("good-1",))
    finally:
        await asyncio.to_thread(raw.close)
    about = [r for r in caplog.records if f"-{tag}._micro" in r.getMessage()]
    loud = [r.getMessage() for r in about if r.levelno == logging.WARNING]
    quiet = [r.getMessage() for r in about if r.levelno == logging.DEBUG]
    assert len(loud) == 2 * BURST, loud  # a burst by each registry (both heard them all)
    assert any(m.startswith(f"mDNS: skipping malformed entry garbage-0-{tag}") for m in quiet)
    further = [r for r in caplog.records if r.getMessage().startswith("further malformed mDNS")]
    assert len(further) == 2, further


async def test_a_stale_copy_does_not_bring_back_a_withdrawn_node(mdns: Open, name: str) -> None:
    reader, writer = mdns(), mdns()
    watch = reader.watch(name)
    gone = service(name, "n1")
    await writer.register(gone, 30)
    assert summary(await next_event(watch, WAIT)) == (C, name, ("n1",))
    (published,) = writer._published.values()  # what went on the wire
    stale = ServiceInfo(
        published.info.type,
        published.info.name,
        port=published.info.port,
        properties=published.info.text,
        server=f"stale-{uuid.uuid4().hex[:8]}.local.",
        parsed_addresses=["127.0.0.1"],
    )
    await writer.deregister(gone)
    assert summary(await next_event(watch, WAIT)) == (D, name, ("n1",))

    raw = await asyncio.to_thread(Zeroconf, interfaces=["127.0.0.1"])
    try:  # a copy held back somewhere arrives after the goodbye
        await asyncio.to_thread(raw.register_service, stale, cooperating_responders=True)
        await writer.register(service(name, "n2"), 30)
        assert summary(await next_event(watch, WAIT)) == (C, name, ("n2",))
    finally:
        await asyncio.to_thread(raw.close)
    # Registered again, the same node is a new incarnation and is seen at once.
    await writer.register(gone, 30)
    assert summary(await next_event(watch, WAIT)) == (C, name, ("n1",))


async def test_an_unusable_interface_is_named(mdns: Open, name: str) -> None:
    registry = mdns(interfaces=["198.51.100.7"])  # TEST-NET-2: on no interface here
    with pytest.raises(RegistryError, match=r"198\.51\.100\.7"):
        await registry.get_service(name)
    with pytest.raises(RegistryError, match=r"198\.51\.100\.7"):
        await registry.register(service(name, "n1"), 30)
    with pytest.raises(RegistryError, match=r"198\.51\.100\.7"):
        await anext(registry.watch(name))


@pytest.mark.parametrize(
    ("interfaces", "message"),
    [(["eth0"], "'eth0' is not an IPv4 address"), (["::1"], "only IPv4"), ([], "at least one")],
)
def test_interfaces_are_ipv4_addresses(interfaces: list[str], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        MdnsRegistry(interfaces=interfaces)


async def test_registering_an_unchanged_node_again_sends_nothing(
    mdns: Open, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = mdns()
    svc = service(name, "n1")
    await registry.register(svc, 30)
    zc = registry._zc
    announced: list[str] = []
    for method in ("async_register_service", "async_update_service"):
        original = getattr(zc, method)

        async def spy(*args: Any, _name: str = method, _original: Any = original) -> Any:
            announced.append(_name)
            return await _original(*args)

        monkeypatch.setattr(zc, method, spy)
    for _ in range(3):
        await registry.register(svc, 30)
    assert announced == []
    await registry.register(replace(svc, metadata={"team": "edge"}), 30)
    assert announced == ["async_update_service"]


async def test_a_large_service_travels_compressed(mdns: Open, name: str) -> None:
    reader, writer = mdns(), mdns()
    watch = reader.watch(name)
    endpoints = tuple(
        Endpoint(f"big.v1.Big.Method{i}", f"big.v1.Request{i}", f"big.v1.Reply{i}", {"i": str(i)})
        for i in range(200)
    )
    big = replace(service(name, "n1"), endpoints=endpoints)
    await writer.register(big, 30)
    assert (await next_event(watch, WAIT)).service == big
    too_big = replace(service(name, "n2"), metadata={"blob": secrets.token_hex(8000)})
    with pytest.raises(RegistryError, match="too large"):
        await writer.register(too_big, 30)


async def test_a_cold_lookup_does_not_block_the_event_loop(
    mdns: Open, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold lookup waits on zeroconf's loop for the answers to settle (at least
    0.1 s of quiet); the caller's loop runs meanwhile, so this test sees the
    settling under way. Had the lookup blocked, this loop would next run once it
    had settled."""
    registry = mdns()
    settling = threading.Event()
    original = registry._until_settled

    async def until_settled() -> None:  # runs on zeroconf's loop
        settling.set()
        await original()

    monkeypatch.setattr(registry, "_until_settled", until_settled)
    lookup = asyncio.ensure_future(registry.get_service(name))
    seen = False
    while not (seen or lookup.done()):  # bounded by the lookup
        seen = settling.is_set() and not registry._settled
        await asyncio.sleep(0)
    assert seen, "this loop did not run while the lookup waited for the answers"
    assert await asyncio.wait_for(lookup, WAIT) == []


async def test_a_cold_lookup_waits_for_a_name_that_answers_late(mdns: Open, name: str) -> None:
    reader, writer = mdns(), mdns()
    await writer.list_services()  # the writer's own browsing is done before the test
    lookup = asyncio.ensure_future(reader.get_service(name))
    await reader.list_services()  # the reader has settled, without the name
    assert not lookup.done()
    await writer.register(service(name, "late"), 30)  # answers after the quiet period
    found = await asyncio.wait_for(lookup, WAIT)
    assert [n.id for s in found for n in s.nodes] == ["late"]
    assert await reader.get_service(f"{name}-absent") == []  # warm now: no wait


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_MULTICAST_ALL is Linux's")
async def test_only_the_groups_joined_on_our_interfaces_are_heard(mdns: Open, name: str) -> None:
    """Linux hands a group's packets from every interface to every socket on the port
    unless IP_MULTICAST_ALL is off; with it on, a loopback-only registry picked up a
    node announced on eth0 (checked by hand: a test doing so would transmit on the LAN)."""
    registry = mdns()
    await registry.get_service(name)
    assert registry._zc is not None
    (wildcard,) = [t.sock for t in registry._zc.engine.readers if t.sock_name[0] == "0.0.0.0"]
    assert wildcard.getsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MULTICAST_ALL", 49)) == 0


async def test_close_ends_watches_and_later_calls_say_so(mdns: Open, name: str) -> None:
    registry = mdns()
    await check_close_ends_watches_and_later_calls_say_so(registry, name)
    with pytest.raises(StopAsyncIteration):  # a watch begun after closing ends at once
        await anext(registry.watch(name))
