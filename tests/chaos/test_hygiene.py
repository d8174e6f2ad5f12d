"""Resource hygiene: after 100 000 calls and 1 000 node churn events the client's
peer pool, this process's open file descriptors and its memory are back where they
were after warming up.

One server process listens on fifty loopback ports; the registry (memory, in this
process) always lists three nodes, each at one of those ports under a fresh id.
Every 100 calls one node leaves and another appears at the next port, so addresses
keep leaving the client's view (their channels must close) and coming back (new ones
open), while calls are in flight on them. A tenth of the calls go to the newest node
by its address, as the grpc broker delivers to a subscriber it found in the
registry: those channels too must close when their node leaves. The server has a
process of its own so the descriptors and memory measured are the client's alone,
and so the calls get the machine's second core.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import time
from collections import deque

import echo_micro
import echo_pb2
from chaos_support import Processes

import micro
from micro import errors
from micro.registry import MemoryRegistry, Node, Service

CALLS = 100_000
CHURN = 1_000  # node replacements: one leaves, one appears
PORTS = 50
LIVE = 3  # nodes listed at any time
WORKERS = 16  # calls in flight at once
WARM = 0.05  # share of the run done before the "before" figures


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def connections() -> list[int]:
    """Remote ports of this process's TCP sockets (a channel's connection is one)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed since listed
            inodes.add(os.readlink(f"/proc/self/fd/{fd}"))
    ports = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                fields = row.split()
                if f"socket:[{fields[9]}]" in inodes:
                    ports.append(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def rss() -> int:
    """Resident memory of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def test_pool_fds_and_memory_are_bounded_after_calls_and_churn(
    processes: Processes,
) -> None:
    addresses = await processes.ports(PORTS)
    registry = MemoryRegistry()
    client = micro.Client(registry, config=micro.Config(registry="memory"))
    echo = echo_micro.EchoClient("echo", client)
    listed: deque[Node] = deque()
    replaced = 0

    async def appear() -> None:
        """A node at the next port, under a new id."""
        serial = replaced + len(listed)
        node = Node(f"echo-{serial}", addresses[serial % PORTS])
        listed.append(node)
        await registry.register(Service("echo", nodes=(node,)), ttl=3600)

    async def churn() -> None:
        """The oldest node leaves, another appears."""
        nonlocal replaced
        await registry.deregister(Service("echo", nodes=(listed.popleft(),)))
        replaced += 1
        await appear()

    calls = 0
    failed = 0
    due: asyncio.Queue[None] = asyncio.Queue()

    async def worker(until: int) -> None:
        nonlocal calls, failed
        while calls < until:
            calls += 1
            if calls % (CALLS // CHURN) == 0:
                due.put_nowait(None)  # churn while the other workers' calls are in flight
            options = None
            if calls % 10 == 0:
                options = micro.CallOptions(address=listed[-1].address)
            try:
                await echo.get(echo_pb2.EchoRequest(), timeout=10, options=options)
            except errors.Error:
                failed += 1

    async def churner(until: int) -> None:
        while replaced < until:
            await due.get()
            await churn()

    async def run(until: int) -> None:
        workers = [worker(until) for _ in range(WORKERS)]
        await asyncio.gather(churner(until * CHURN // CALLS), *workers)

    def listed_ports() -> set[int]:
        return {int(n.address.rsplit(":", 1)[1]) for n in listed}

    async def settled() -> list[int]:
        """This process's connections once those of closed channels are gone
        (polled: grpc closes sockets on its own threads, with no event to await)."""
        for _ in range(200):  # 10 s at most
            if set(connections()) <= listed_ports():
                break
            await asyncio.sleep(0.05)
        return connections()

    async def caught_up() -> None:
        """Until the client's cache lists what the registry does (polled: the cache
        applies the registry's events on a task of its own)."""
        for _ in range(500):  # 5 s at most
            cached = client.registry.cached("echo") or ()
            if {n.id for s in cached for n in s.nodes} == {n.id for n in listed}:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the client's cache never listed what the registry does")

    try:
        fds_idle = open_fds()
        for _ in range(LIVE):
            await appear()
        started = time.monotonic()
        await run(int(CALLS * WARM))
        gc.collect()
        fds_before, rss_before, connected_before = open_fds(), rss(), connections()
        await run(CALLS)
        seconds = time.monotonic() - started
        # The client sees the registry's changes on its next call: make one after
        # the last churn, as any caller would.
        await caught_up()
        await echo.get(echo_pb2.EchoRequest(), timeout=10)
        await asyncio.gather(*client._pool.closing)
        gc.collect()
        connected = await settled()
        fds_after, rss_after = open_fds(), rss()

        print(
            f"\n{CALLS} calls, {CHURN} churn events in {seconds:.1f}s "
            f"({CALLS / seconds:.0f}/s); fds {fds_idle}, {fds_before} -> {fds_after}; "
            f"connections {len(connected)}; "
            f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; "
            f"peers {len(client._pool.peers)}"
        )
        assert (calls, replaced, failed) == (CALLS, CHURN, 0)
        assert set(client._pool.peers) == {n.address for n in listed}  # departed: gone
        assert not client._pool.orphans
        direct = {options.address for _, path, options in client._routes if not path}
        assert direct <= {n.address for n in listed}  # none to a node that left
        assert len(client._routes) <= 1 + LIVE
        assert len(connected) <= LIVE
        assert set(connected) <= listed_ports()  # none to a node no longer listed
        # Descriptors other than connections: none gained.
        assert fds_after - len(connected) <= fds_before - len(connected_before)
        assert rss_after - rss_before < 8 * 2**20  # < 84 bytes a call
    finally:
        await client.close()
