"""Echo instances as separate processes registered in NATS, found by a client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats_support import NatsServer
from runtime_support import GEN, HERE

import echo_micro  # isort: skip
import echo_pb2  # isort: skip

import micro
from micro import errors
from micro.registry.nats import NatsRegistry

pytestmark = pytest.mark.backend

NODE = Path(__file__).parent / "nats_node.py"


@dataclass
class Child:
    process: asyncio.subprocess.Process
    address: str
    id: str


Spawn = Callable[[str], Awaitable[Child]]


@pytest.fixture
async def spawn(nats_server: NatsServer) -> AsyncIterator[Spawn]:
    children: list[asyncio.subprocess.Process] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GEN), str(HERE)])}

    async def start(name: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE),
            "--name",
            name,
            "--server",
            nats_server.url,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        children.append(process)
        assert process.stdout is not None
        started = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        return Child(process, started["address"], started["id"])

    yield start
    for process in children:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def ids(registry: NatsRegistry, name: str) -> set[str]:
    return {n.id for s in await registry.get_service(name) for n in s.nodes}


async def until(registry: NatsRegistry, name: str, want: set[str], within: float) -> float:
    """Seconds until ``name``'s nodes are ``want``, watching (bounded by ``within``)."""
    start = time.monotonic()
    changes = registry.watch(name)
    try:
        async with asyncio.timeout(within):
            while await ids(registry, name) != want:
                await anext(changes)
    finally:
        await changes.aclose()
    return time.monotonic() - start


async def test_three_processes_kill_outage_and_empty_restart(
    nats_server: NatsServer, spawn: Spawn, name: str
) -> None:
    children = await asyncio.gather(*(spawn(name) for _ in range(3)))
    all_ids = {c.id for c in children}
    watcher = NatsRegistry([nats_server.url])
    found = await until(watcher, name, all_ids, 1.0)  # discovered within 1 s

    async with micro.Client(NatsRegistry([nats_server.url])) as client:
        echo = echo_micro.EchoClient(name, client)
        answered: list[str] = []
        failed: list[errors.Error] = []
        stop = asyncio.Event()
        progress = asyncio.Condition()

        async def answers(count: int) -> None:
            """Until ``count`` more calls have been answered (bounded)."""
            target = len(answered) + count
            async with asyncio.timeout(20), progress:
                await progress.wait_for(lambda: len(answered) >= target)

        async def load() -> None:
            while not stop.is_set():
                try:
                    answered.append((await echo.get(echo_pb2.EchoRequest(), timeout=2)).node)
                    async with progress:
                        progress.notify_all()
                except errors.Error as e:
                    failed.append(e)
                await asyncio.sleep(0.005)  # bounded, steady load

        workers = [asyncio.ensure_future(load()) for _ in range(4)]
        try:
            await answers(100)  # warm: every call so far went somewhere
            assert set(answered) == all_ids

            # kill -9: the key expires on its own after the TTL, no call fails.
            victim, *alive = children
            victim.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            gone = await until(watcher, name, {c.id for c in alive}, 5.0)
            expiry = time.monotonic() - killed
            assert expiry < 2 + 1.5
            await answers(50)
            assert set(answered[-40:]) <= {c.id for c in alive}

            # outage: the client serves from its cache.
            nats_server.stop()
            await answers(200)

            # restart empty on the same port: the services register again by themselves.
            nats_server.start(empty=True)
            restarted = time.monotonic()
            back = NatsRegistry([nats_server.url])
            try:
                deadline = restarted + 2 + 0.5 + 2
                # Polled, not watched: a watch from a new registry would create the
                # bucket, which the services' re-registration is what is under test.
                while await ids(back, name) != {c.id for c in alive}:
                    assert time.monotonic() < deadline, await ids(back, name)
                    await asyncio.sleep(0.05)
                again = time.monotonic() - restarted
            finally:
                await back.close()
            await answers(50)
        finally:
            stop.set()
            await asyncio.gather(*workers)
            await watcher.close()
    assert failed == []
    print(
        f"\ndiscovered {found:.3f}s; expiry after kill {expiry:.2f}s ({gone:.2f}s watched);"
        f" re-registered {again:.2f}s after empty restart; {len(answered)} calls, 0 failed"
    )


async def test_one_registry_for_a_service_and_a_blocking_client(
    nats_server: NatsServer, name: str
) -> None:
    """The service registers from the test's loop; the blocking client looks up and
    watches from its own loop thread: both through the same ``NatsRegistry``."""
    from echo_node import Echo

    registry = NatsRegistry([nats_server.url])
    svc = micro.Service(name, registry=registry, register_ttl=2, register_interval=0.5)
    svc.handle(Echo(svc.id))
    await svc.start()
    try:
        client = micro.Client(registry)
        echo = echo_micro.EchoSyncClient(name, client)

        def calls() -> set[str]:
            try:
                return {echo.get(echo_pb2.EchoRequest(), timeout=5).node for _ in range(20)}
            finally:
                client.close_sync()

        assert await asyncio.to_thread(calls) == {svc.id}
    finally:
        await svc.stop()
        await registry.close()
