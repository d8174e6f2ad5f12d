"""Echo instances as separate processes registered in etcd, found by a client under
steady load: kill -9 of one, an etcd outage, and etcd back with empty data."""

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
from etcd_support import EtcdServer
from runtime_support import GEN, HERE

import echo_micro  # isort: skip
import echo_pb2  # isort: skip

import micro
from micro import errors
from micro.registry import Registry
from micro.registry.etcd import EtcdRegistry

pytestmark = pytest.mark.backend

NODE = Path(__file__).parent / "etcd_node.py"
TTL, INTERVAL = 2.0, 0.5  # as etcd_node.py registers


@dataclass
class Child:
    process: asyncio.subprocess.Process
    address: str
    id: str


Spawn = Callable[[str], Awaitable[Child]]


@pytest.fixture
async def spawn(etcd_server: EtcdServer) -> AsyncIterator[Spawn]:
    children: list[asyncio.subprocess.Process] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GEN), str(HERE)])}

    async def start(name: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE),
            "--name",
            name,
            "--endpoint",
            etcd_server.endpoint,
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


async def ids(registry: Registry, name: str) -> set[str]:
    return {n.id for s in await registry.get_service(name) for n in s.nodes}


async def until(registry: Registry, name: str, want: set[str], within: float) -> float:
    """Seconds until ``name``'s nodes are ``want``, watching (bounded by ``within``)."""
    start = time.monotonic()
    changes = registry.watch(name)

    async def reached() -> None:
        while await ids(registry, name) != want:
            await anext(changes)

    try:
        await asyncio.wait_for(reached(), within)
    finally:
        await changes.aclose()  # type: ignore[attr-defined]
    return time.monotonic() - start


async def test_three_processes_kill_outage_and_empty_restart(
    etcd_server: EtcdServer, spawn: Spawn, name: str
) -> None:
    children = await asyncio.gather(*(spawn(name) for _ in range(3)))
    all_ids = {c.id for c in children}
    watcher = EtcdRegistry([etcd_server.endpoint])
    found = await until(watcher, name, all_ids, 1.0)  # discovered within 1 s

    async with micro.Client(EtcdRegistry([etcd_server.endpoint])) as client:
        echo = echo_micro.EchoClient(name, client)
        answered: list[str] = []
        failed: list[errors.Error] = []
        stop = asyncio.Event()
        progress = asyncio.Condition()

        async def answers(count: int) -> None:
            """Until ``count`` more calls have been answered (bounded)."""
            target = len(answered) + count
            async with progress:
                await asyncio.wait_for(progress.wait_for(lambda: len(answered) >= target), 20)

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

            # kill -9: the lease runs out, etcd deletes the key; no call fails.
            victim, *alive = children
            alive_ids = {c.id for c in alive}
            victim.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await until(watcher, name, alive_ids, TTL + 3)
            expiry = time.monotonic() - killed
            assert expiry < TTL + 1.5
            await answers(50)
            assert set(answered[-40:]) <= alive_ids

            # outage: the client serves from its cache.
            etcd_server.stop()
            await answers(200)

            # back empty on the same ports: the services notice their leases are gone
            # and register again by themselves.
            etcd_server.start(empty=True)
            restarted = time.monotonic()
            back = EtcdRegistry([etcd_server.endpoint])
            try:
                deadline = restarted + TTL + INTERVAL
                # Polled, not watched: polling a store other processes write.
                while await ids(back, name) != alive_ids:
                    assert time.monotonic() < deadline, await ids(back, name)
                    await asyncio.sleep(0.02)
                again = time.monotonic() - restarted
            finally:
                await back.close()
            await answers(100)
            assert set(answered[-40:]) == alive_ids  # the client still spreads its calls
        finally:
            stop.set()
            await asyncio.gather(*workers)
            await watcher.close()
    assert failed == []
    print(
        f"\ndiscovered {found:.3f}s; key gone {expiry:.2f}s after kill -9 (TTL {TTL}s);"
        f" re-registered {again:.2f}s after empty restart; {len(answered)} calls, 0 failed"
    )


async def test_one_registry_for_a_service_and_a_blocking_client(
    etcd_server: EtcdServer, name: str
) -> None:
    """The service registers from the test's loop; the blocking client looks up and
    watches from its own loop thread: both through the same ``EtcdRegistry``."""
    from echo_node import Echo

    registry = EtcdRegistry([etcd_server.endpoint])
    svc = micro.Service(name, registry=registry, register_ttl=TTL, register_interval=INTERVAL)
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
