"""EtcdRegistry against a real etcd: the registry contract (registry_contract), and
what is etcd's own: keys and leases, garbage keys, wrong addresses, failover,
authentication, and etcd restarted (with or without its data)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable

import aetcd  # type: ignore[import-untyped]
import pytest
from etcd_support import EtcdServer, free_ports
from registry_contract import *  # noqa: F403  (the contract every backend passes, run here)
from registry_contract import (
    WAIT,
    Backend,
    check_close_ends_watches_and_later_calls_say_so,
    check_garbage_entries_are_skipped,
    watching,
)
from registry_support import next_event, nodes_by_version, service, summary

from micro.registry import EventType, RegistryError
from micro.registry.entry import MAX_SIZE
from micro.registry.etcd import EtcdRegistry

pytestmark = pytest.mark.backend

C, U, D = EventType.CREATE, EventType.UPDATE, EventType.DELETE
Open = Callable[..., EtcdRegistry]


@pytest.fixture
def backend(etcd_registry: Open) -> Backend:
    return Backend(etcd_registry, ttl=1.0)  # leases count whole seconds


async def keys(server: EtcdServer, prefix: str = "/micro/registry/") -> dict[str, bytes]:
    """What etcd holds under ``prefix``, read with aetcd directly."""
    async with aetcd.Client("127.0.0.1", server.port, timeout=2) as client:
        found = await client.get_prefix(prefix.encode())
        return {kv.key.decode(): kv.value for kv in found.kvs}


async def test_one_key_per_node_under_the_prefix(
    etcd_registry: Open, etcd_server: EtcdServer, name: str
) -> None:
    registry = etcd_registry(prefix="/elsewhere/")
    await registry.register(service(name, "n1", "n2"), 30)
    assert sorted(await keys(etcd_server, "/elsewhere/")) == [
        f"/elsewhere/{name}/n1",
        f"/elsewhere/{name}/n2",
    ]
    assert await etcd_registry().get_service(name) == []  # the default prefix is apart


async def test_a_lease_that_runs_out_takes_its_key(
    etcd_registry: Open, etcd_server: EtcdServer, name: str
) -> None:
    reader = etcd_registry()
    events = await watching(reader, name)
    await etcd_registry().register(service(name, "n1"), 1)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    assert summary(await next_event(events, 1 + WAIT)) == (D, name, ("n1",))
    assert await keys(etcd_server) == {}


async def test_a_key_removed_behind_its_back_is_written_again(
    etcd_registry: Open, etcd_server: EtcdServer, name: str
) -> None:
    registry = etcd_registry()
    await registry.register(service(name, "n1"), 30)
    await asyncio.to_thread(etcd_server.ctl, "del", "--prefix", "/micro/registry/")
    await registry.register(service(name, "n1"), 30)
    assert list(await keys(etcd_server)) == [f"/micro/registry/{name}/n1"]


async def test_a_lost_lease_is_granted_again(
    etcd_registry: Open, etcd_server: EtcdServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry, reader = etcd_registry(), etcd_registry()
    await registry.register(service(name, "n1"), 30)
    events = reader.watch(name)
    await reader.list_services()
    listing = await asyncio.to_thread(etcd_server.ctl, "lease", "list")
    assert listing.startswith("found 1 leases"), listing
    lease = listing.split()[-1]
    await asyncio.to_thread(etcd_server.ctl, "lease", "revoke", lease)
    assert summary(await next_event(events, WAIT)) == (D, name, ("n1",))
    with caplog.at_level(logging.WARNING):
        await registry.register(service(name, "n1"), 30)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    assert f"the lease of '/micro/registry/{name}/n1' is gone" in caplog.text


async def test_garbage_entries_are_skipped(
    etcd_registry: Open, etcd_server: EtcdServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = etcd_registry()
    prefix = f"/micro/registry/{name}/"
    async with aetcd.Client("127.0.0.1", etcd_server.port, timeout=2) as client:

        async def put(key: str, value: bytes) -> None:
            await client.put(key.encode(), value)

        await check_garbage_entries_are_skipped(
            registry,
            name,
            caplog,
            where=f"etcd registry at {etcd_server.endpoint}",
            key=lambda node: prefix + node,
            put=put,
            more={
                "/micro/registry/garbage": (b"[]", "not a JSON object"),
                prefix + "big": (b" " * (MAX_SIZE + 1), f"{MAX_SIZE + 1} bytes, more than"),
            },
        )


async def test_wrong_address_fails_fast_naming_it() -> None:
    address = f"127.0.0.1:{free_ports(1)[0]}"
    timeout = 5.0  # per request: refused at once is well within it, however busy
    registry = EtcdRegistry([address], timeout=timeout)
    start = time.monotonic()
    with pytest.raises(RegistryError, match=address):
        await registry.register(service("x", "n1"), 5)
    with pytest.raises(RegistryError, match=address):
        await registry.get_service("x")
    events = registry.watch()
    with pytest.raises(RegistryError, match=address):
        await next_event(events, WAIT)
    assert time.monotonic() - start < timeout  # none of the three waited it out
    await registry.close()


async def test_the_next_endpoint_answers_when_one_is_down(
    etcd_server: EtcdServer, name: str
) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    registry = EtcdRegistry([dead, etcd_server.endpoint])
    try:
        await registry.register(service(name, "n1"), 30)
        assert nodes_by_version(await registry.get_service(name)) == {"1.0": {"n1"}}
        etcd_server.stop()
        with pytest.raises(RegistryError) as failed:
            await registry.get_service(name)
        assert f"{dead}: failed to connect" in str(failed.value)
        # Each endpoint tried, with its reason: for the one just stopped, grpc says
        # "failed to connect" or "Stream removed", as its channel has noticed or not.
        assert f"{etcd_server.endpoint}: " in str(failed.value)
    finally:
        await registry.close()


async def test_username_and_password(etcd_server: EtcdServer, name: str) -> None:
    for command in (
        ("user", "add", "root", "--new-user-password=s3cret"),
        ("role", "add", "root"),
        ("user", "grant-role", "root", "root"),
        ("auth", "enable"),
    ):
        await asyncio.to_thread(etcd_server.ctl, *command)
    right = EtcdRegistry([etcd_server.endpoint], username="root", password="s3cret")
    wrong = EtcdRegistry([etcd_server.endpoint], username="root", password="guess")
    anonymous = EtcdRegistry([etcd_server.endpoint])
    try:
        await right.register(service(name, "n1"), 30)
        assert nodes_by_version(await right.get_service(name)) == {"1.0": {"n1"}}
        with pytest.raises(RegistryError, match="authentication failed") as failed:
            await wrong.get_service(name)
        assert etcd_server.endpoint in str(failed.value)
        with pytest.raises(RegistryError, match="user name is empty"):
            await anonymous.get_service(name)
        # A restart forgets sign-in tokens: the registry signs in again by itself.
        etcd_server.stop()
        etcd_server.start()
        assert nodes_by_version(await right.get_service(name)) == {"1.0": {"n1"}}
    finally:
        for registry in (right, wrong, anonymous):
            await registry.close()


async def test_watch_rides_out_a_restart(
    etcd_registry: Open, etcd_server: EtcdServer, name: str
) -> None:
    writer, reader = etcd_registry(), etcd_registry()
    await writer.register(service(name, "n1"), 30)
    events = reader.watch(name)
    await reader.list_services()
    etcd_server.stop()
    etcd_server.start()  # with its data: n1 is still there, no event for it
    await writer.register(service(name, "n2"), 30)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n2",))
    await writer.deregister(service(name, "n1"))
    assert summary(await next_event(events, WAIT)) == (D, name, ("n1",))


async def test_watch_reports_what_changed_while_etcd_was_away(
    etcd_registry: Open, etcd_server: EtcdServer, name: str
) -> None:
    """Changes the watch could not see (a restart kills its stream, not the data)
    come out as the difference once it reads again."""
    writer, reader = etcd_registry(), etcd_registry()
    await writer.register(service(name, "n1"), 30)
    events = reader.watch(name)
    await reader.list_services()
    etcd_server.stop()
    etcd_server.start()
    await writer.deregister(service(name, "n1"))
    await writer.register(service(name, "n2"), 30)
    seen = {summary(await next_event(events, WAIT)) for _ in range(2)}
    assert seen == {(D, name, ("n1",)), (C, name, ("n2",))}


async def test_etcd_restarted_empty(
    etcd_registry: Open, etcd_server: EtcdServer, name: str
) -> None:
    """The lost lease is noticed and granted again by ``register``; a watcher keeps
    the nodes it knew through ``lost_data_grace`` and then reports the ones that
    did not come back."""
    writer = etcd_registry()
    reader = etcd_registry(lost_data_grace=3)
    await writer.register(service(name, "back", "gone"), 30)
    events = reader.watch(name)
    await reader.list_services()
    etcd_server.stop()
    with pytest.raises(RegistryError):
        await writer.register(service(name, "back"), 30)
    restarted = time.monotonic()  # the watcher reads again after this
    etcd_server.start(empty=True)
    assert await keys(etcd_server) == {}
    deadline = time.monotonic() + 10
    while True:  # bounded: the channel reconnects within a second
        try:
            await writer.register(service(name, "back"), 30)
            break
        except RegistryError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert list(await keys(etcd_server)) == [f"/micro/registry/{name}/back"]
    assert summary(await next_event(events, WAIT)) == (D, name, ("gone",))
    assert time.monotonic() - restarted > 3  # kept through the grace
    assert nodes_by_version(await reader.get_service(name)) == {"1.0": {"back"}}


async def test_a_watch_closed_or_dropped_is_released(etcd_registry: Open, name: str) -> None:
    registry = etcd_registry()
    registry.watch(name)  # never iterated, dropped at once
    events = registry.watch()
    await registry.register(service(name, "n1"), 30)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n1",))
    await events.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0)  # the drops are handed to the registry's loop thread
    await registry.list_services()
    assert not registry._watches


async def test_close_ends_watches_and_later_calls_say_so(etcd_registry: Open, name: str) -> None:
    await check_close_ends_watches_and_later_calls_say_so(etcd_registry(), name)


def test_bad_endpoints_are_named() -> None:
    with pytest.raises(ValueError, match="'localhost'"):
        EtcdRegistry(["localhost"])
    with pytest.raises(ValueError, match="username and password"):
        EtcdRegistry(username="root")
    assert EtcdRegistry(["http://127.0.0.1:2379", "[::1]:2379"]).endpoints == [
        "127.0.0.1:2379",
        "[::1]:2379",
    ]


def test_without_aetcd_the_import_says_what_to_install() -> None:
    code = "import sys; sys.modules['aetcd'] = None; import micro.registry.etcd"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: micro.registry.etcd needs aetcd: install `micro-grpc[etcd]`"
    )


async def test_close_while_a_watch_is_being_created(etcd_server: EtcdServer) -> None:
    """Closing lands right when etcd creates the watch stream, where a cancellation
    used to be swallowed (close then waited out its bound, the request timeout):
    repeated, as the timing varies."""
    timeout = 10.0  # the bound a swallowed cancellation makes close wait out
    for _ in range(30):
        registry = EtcdRegistry([etcd_server.endpoint], timeout=timeout)
        events = registry.watch()
        await registry.list_services()  # the watch has read; its stream is being created
        await asyncio.wait_for(registry.close(), timeout / 2)
        with pytest.raises(StopAsyncIteration):
            await next_event(events, WAIT)
