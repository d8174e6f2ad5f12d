"""Instances as separate processes: killed with SIGKILL, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import echo_micro
import echo_pb2
import pytest
from echo_node import HOLD
from runtime_support import GEN, HERE

import micro
from micro import errors, selector
from micro.pool import Peer
from micro.registry import Event, EventType, MemoryRegistry, Node, Service
from micro.selector.health import EJECTION

Req = echo_pb2.EchoRequest


@dataclass
class Child:
    process: asyncio.subprocess.Process
    address: str
    id: str

    async def release(self) -> None:
        """Let the calls held in a ``--hold`` child answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"release\n")
        await self.process.stdin.drain()

    async def received(self, count: int) -> None:
        """Until the child reports ``count`` calls arrived (it prints each)."""
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), 10)
            assert line, "the child exited"
            if json.loads(line).get("received", 0) >= count:
                return


Spawn = Callable[..., Awaitable[Child]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """``await spawn("--version", "a")`` runs echo_node.py in its own process; every
    child is killed by PID after the test."""
    children: list[asyncio.subprocess.Process] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GEN), str(HERE)])}

    async def start(*args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "echo_node.py"),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        children.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        started = json.loads(line)
        return Child(process, started["address"], started["id"])

    yield start
    for process in children:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_kill_9_under_load_loses_no_call(
    registry: MemoryRegistry, client: micro.Client, spawn: Spawn
) -> None:
    children = [await spawn() for _ in range(3)]
    for child in children:
        node = Node(child.id, child.address)
        await registry.register(Service("echo", nodes=(node,)), ttl=60)
    attempts: list[tuple[str, float]] = []  # each attempt's node address and start

    def recorded() -> selector.Strategy[Peer]:
        factory: selector.StrategyFactory[Peer] = selector.strategy("least_request")
        pick = factory()

        def record(nodes: Sequence[Peer]) -> Peer:
            node: Peer = pick(nodes)
            attempts.append((node.address, time.monotonic()))
            return node

        return record

    echo = echo_micro.EchoClient("echo", client, options=micro.CallOptions(strategy=recorded))
    answered: list[str] = []
    failed: list[errors.Error] = []
    warmed = asyncio.Event()
    enough = [sys.maxsize]  # answers to stop at: set at the kill
    give_up = time.monotonic() + 60  # guards against a bug only: the count ends the load

    async def load() -> None:
        while len(answered) < enough[0] and time.monotonic() < give_up:
            try:
                answered.append((await echo.get(Req(), timeout=2)).node)
            except errors.Error as e:
                failed.append(e)
            if len(answered) >= 300:
                warmed.set()

    workers = [asyncio.ensure_future(load()) for _ in range(8)]
    await asyncio.wait_for(warmed.wait(), 30)
    victim = children[0]
    before = len(answered)
    enough[0] = before + 300
    victim.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await asyncio.gather(*workers)

    assert failed == []  # zero failed calls at the caller
    after = answered[before:]
    assert len(after) >= 300
    assert set(after[-50:]) == {children[1].id, children[2].id}
    # Out of rotation by its failures (ejected after EJECT_AFTER of them), for
    # EJECTION seconds: longer than the load lasted after the kill, so never tried
    # again; and long before its registration (60 s) could expire.
    peer = client._pool.peers[victim.address]
    ejected = peer.ejected_until - EJECTION
    assert ejected > killed, "the dead node was never ejected: no failover was exercised"
    assert time.monotonic() < peer.ejected_until, "the load outlasted the ejection"
    assert [t for a, t in attempts if a == victim.address and t > ejected] == []
    entries = await registry.get_service("echo")
    assert victim.id in {n.id for s in entries for n in s.nodes}


@pytest.mark.backend
async def test_sigterm_drains_50_calls_and_leaves_the_registry_first(spawn: Spawn) -> None:
    mdns = pytest.importorskip("micro.registry.mdns", reason="mDNS registry not available")
    registry = mdns.MdnsRegistry(interfaces=["127.0.0.1"])
    name = f"echo-{os.getpid()}-{time.monotonic_ns()}"
    leaving = await spawn(
        "--name", name, "--version", "a", "--registry", "mdns", "--report", "--hold"
    )
    staying = await spawn("--name", name, "--version", "b", "--registry", "mdns")
    changes: AsyncIterator[Event] = registry.watch(name)
    seen = {n.id for s in await registry.get_service(name) for n in s.nodes}

    async def both_seen() -> None:
        while seen < {leaving.id, staying.id}:
            seen.add((await anext(changes)).service.nodes[0].id)

    await asyncio.wait_for(both_seen(), 5)  # asyncio.timeout needs 3.11
    async with micro.Client(registry) as client:
        echo = echo_micro.EchoClient(name, client)
        pinned = micro.CallOptions(version="a")
        ready = micro.CallOptions(version="b")
        for options in (pinned, ready):  # both discovered before the test starts
            await echo.get(Req(), options=options, timeout=5)
        calls = [  # held there until released below: in flight across the SIGTERM
            asyncio.ensure_future(echo.get(Req(text=HOLD), options=pinned, timeout=20))
            for _ in range(50)
        ]
        await leaving.received(50 + 1)  # the warm-up call, then all 50
        leaving.process.send_signal(signal.SIGTERM)

        async def deleted() -> Event:
            async for event in changes:
                if event.type is EventType.DELETE:
                    return event
            raise AssertionError("the watch ended")

        event = await asyncio.wait_for(deleted(), 5)
        assert event.service.nodes[0].id == leaving.id
        assert not any(c.done() for c in calls)  # the stop cut none of them short
        assert {(await echo.get(Req(), timeout=5)).node for _ in range(10)} == {staying.id}
        assert leaving.process.returncode is None  # deregistered while calls still ran
        await leaving.release()
        replies = await asyncio.wait_for(asyncio.gather(*calls), 20)
        assert [r.node for r in replies] == [leaving.id] * 50
        assert await asyncio.wait_for(leaving.process.wait(), 20) == 0
        await changes.aclose()  # type: ignore[attr-defined]
    await registry.close()
