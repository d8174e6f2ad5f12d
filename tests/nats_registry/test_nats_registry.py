"""NatsRegistry against a real nats-server: the registry contract (registry_contract),
and what is NATS KV's own: garbage entries, a wrong address, a server restarted
empty, watches released."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats_support import NatsServer, running
from registry_contract import *  # noqa: F403  (the contract every backend passes, run here)
from registry_contract import (
    WAIT,
    Backend,
    check_close_ends_watches_and_later_calls_say_so,
    check_garbage_entries_are_skipped,
)
from registry_support import next_event, nodes_by_version, service, summary

from micro.registry import EventType, RegistryError
from micro.registry.nats import NatsRegistry, _part

pytestmark = pytest.mark.backend

C, U, D = EventType.CREATE, EventType.UPDATE, EventType.DELETE
Open = Callable[..., NatsRegistry]


@pytest.fixture
def backend(nats_registry: Open) -> Backend:
    return Backend(nats_registry, ttl=1.0)  # message TTLs count whole seconds


async def test_garbage_entries_are_skipped(
    nats_registry: Open, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = nats_registry()
    nc = await nats.connect(registry.servers)
    try:

        async def put(key: str, value: bytes) -> None:  # once the check has registered
            kv = await nc.jetstream().key_value(registry.bucket)
            await kv.put(key, value)

        await check_garbage_entries_are_skipped(
            registry,
            name,
            caplog,
            where="NATS registry",
            key=lambda node: f"{_part(name)}.{_part(node)}",
            put=put,
            more={"garbage": (b"[]", "not a JSON object")},
        )
    finally:
        await nc.close()


async def test_wrong_address_fails_fast_naming_it() -> None:
    from nats_support import free_port

    address = f"nats://127.0.0.1:{free_port()}"
    timeout = 5.0  # per connection attempt: refused at once is well within it, however busy
    # Refused: each server tried twice, 0.2 s apart.
    registry = NatsRegistry([address], connect_timeout=timeout)
    start = time.monotonic()
    with pytest.raises(RegistryError, match=address):
        await registry.register(service("x", "n1"), 5)
    assert time.monotonic() - start < timeout  # not waited out
    await registry.close()


async def test_passwords_never_print(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with running(tmp_path, login=("app", "s3cret-pw")) as server:
        caplog.set_level(logging.DEBUG)
        good = NatsRegistry([f"nats://app:s3cret-pw@127.0.0.1:{server.port}"])
        wrong = NatsRegistry([f"nats://app:wr0ng-pw@127.0.0.1:{server.port}"])
        try:
            await good.register(service(name, "n1"), 30)
            assert [n.id for n in (await good.get_service(name))[0].nodes] == ["n1"]
            with pytest.raises(RegistryError) as refused:
                await wrong.get_service(name)
            server.stop()  # the connection is lost: a debug line, and a watch fails
            with pytest.raises(RegistryError) as lost:
                await good.register(service(name, "n1"), 30)
        finally:
            await good.close()
            await wrong.close()
        shown = [repr(good), repr(wrong), str(refused.value), str(lost.value), caplog.text]
        assert f"nats://app:***@127.0.0.1:{server.port}" in repr(good)
        assert f"app:***@127.0.0.1:{server.port}" in str(refused.value)
        assert not [text for text in shown if "s3cret" in text or "wr0ng" in text], shown


async def test_server_restarted_empty(
    nats_registry: Open, nats_server: NatsServer, name: str
) -> None:
    # A register while the server is down waits for the reconnect until this runs out.
    registry = nats_registry(request_timeout=2.0)
    await registry.register(service(name, "n1"), 30)
    events = registry.watch(name)
    await registry.register(service(name, "n2"), 30)
    assert summary(await next_event(events, WAIT)) == (C, name, ("n2",))
    nats_server.stop()
    with pytest.raises(RegistryError):
        await next_event(events, WAIT)
    with pytest.raises(RegistryError):
        await registry.register(service(name, "n1"), 30)
    nats_server.start(empty=True)
    deadline = time.monotonic() + 10
    while True:  # bounded: the client reconnects every 0.2 s
        try:
            await registry.register(service(name, "n1"), 30)
            break
        except RegistryError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert nodes_by_version(await registry.get_service(name)) == {"1.0": {"n1"}}


def test_without_nats_py_the_import_says_what_to_install() -> None:
    code = "import sys; sys.modules['nats'] = None; import micro.registry.nats"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: micro.registry.nats needs nats-py: install `micro-grpc[nats]`"
    )


async def test_a_watch_dropped_unstarted_is_released(nats_registry: Open, name: str) -> None:
    registry = nats_registry()
    registry.watch(name)  # never iterated, dropped at once
    await registry.list_services()  # its subscription has started by now
    await asyncio.sleep(0)  # the drop is handed to the registry's loop thread
    await registry.list_services()
    assert not registry._watches


async def test_close_ends_watches_and_later_calls_say_so(nats_registry: Open, name: str) -> None:
    await check_close_ends_watches_and_later_calls_say_so(nats_registry(), name)
