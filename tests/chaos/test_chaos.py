"""Chaos under steady load: three Echo instances, each its own process, found through
a registry, and a load generator process calling them ~200 times a second while one
instance is killed, stopped gracefully, hung, or replaced, or the registry itself
goes away.

What must hold in every scenario: every call started has an outcome; idempotent
methods (Get, Watch) never fail. A non-idempotent one (Put) may fail only where it
was running when the node was struck, with the status that says so: UNAVAILABLE for
a killed node; DEADLINE_EXCEEDED for a hung one (it may yet run the Put: UNAVAILABLE
would invite a retry); a graceful stop fails nothing. Besides the load's own Puts,
the test sends HELD Puts straight to the node it strikes, held in its handler until
the test releases them: Puts are running there at the strike by arrangement, and
their outcome is checked.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence

import echo_micro
import echo_pb2
import grpc.aio
import pytest
from chaos_support import IDEMPOTENT, Call, Instance, Loader, Processes, Report
from echo_node import HOLD
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats_support import NatsServer

import micro
from micro import errors, selector
from micro.pool import Peer
from micro.registry import MemoryRegistry
from micro.registry.mdns import MdnsRegistry
from micro.service import QUIET

pytestmark = [pytest.mark.backend, pytest.mark.timeout(60)]  # each scenario < 60 s

MDNS = {"MICRO_REGISTRY": "mdns"}  # loopback only, the zero-setup default
RATE = 200  # calls started per second
# Generous against a loaded machine, where a process may wait a second for a core:
# a healthy node must not look hung.
TIMEOUT = 10.0  # each call's deadline, seconds
ATTEMPT = 2.0  # each attempt's, seconds
# A Put's handler time: at 50 Puts a second over three nodes, about five are running
# on each node at any moment.
PUT_SLEEP = 0.3
HELD = 3  # Puts the test holds on the node it strikes
TTL = 2.0  # instances' registration, seconds (renewed every quarter)
Reply = echo_pb2.EchoReply
LOAD = {
    "rate": RATE,
    "methods": "get,watch,get,put",  # a quarter of the calls may not run twice
    "timeout": TIMEOUT,
    "attempt_timeout": ATTEMPT,
    "put_sleep": PUT_SLEEP,
}


async def start(
    processes: Processes,
    name: str,
    registry: Mapping[str, str],
    seconds: float,
    sleep: float = 0.05,
    ttl: float = TTL,
) -> tuple[list[Instance], Loader]:
    """Three instances (registered for ``ttl`` seconds) and a load of ``seconds`` at
    RATE, warm: every instance has answered calls, so each is known to the client.
    Gets take ``sleep`` in the handler, Puts PUT_SLEEP."""
    instances = list(
        await asyncio.gather(*(processes.instance(name, registry, ttl) for _ in range(3)))
    )
    count = int(RATE * seconds)
    loader = await processes.loader(name, registry, count=count, sleep=sleep, **LOAD)
    for instance in instances:
        await loader.answered(instance.id, 20)
    return instances, loader


def outcomes(report: Report, calls: Sequence[Call]) -> list[Call]:
    """Checks what holds in every scenario; returns the failed calls (all Puts)."""
    assert report["started"] == len(calls)  # every call started has an outcome...
    counted = sum(n for codes in report["outcomes"].values() for n in codes.values())
    assert counted == len(calls)  # ...counted exactly once
    failed = [c for c in calls if c.code != "OK"]
    assert [c for c in failed if c.method in IDEMPOTENT] == [], report
    return failed


def figures(scenario: str, report: Report, failed: Sequence[Call], **more: object) -> None:
    by_code: dict[str, int] = {}
    for c in failed:
        by_code[c.code] = by_code.get(c.code, 0) + 1
    extra = "".join(f"; {k} {v}" for k, v in more.items())
    print(
        f"\n{scenario}: {report['started']} calls in {report['seconds']:.1f}s, "
        f"failed {by_code or 0}{extra}"
    )


@pytest.fixture
async def direct() -> AsyncIterator[micro.Client]:
    """The test's own client, for calls straight to a node's address."""
    client = micro.Client(MemoryRegistry(), config=micro.Config(registry="memory"))
    yield client
    await client.close()


async def hold_puts(client: micro.Client, instance: Instance) -> list[asyncio.Task[Reply]]:
    """HELD Puts sent straight to ``instance`` and waiting in its handler (until
    ``instance.release``): running there when it is struck, by arrangement."""
    options = micro.CallOptions(address=instance.address)
    echo = echo_micro.EchoClient("echo", client, options=options)
    puts = [
        asyncio.ensure_future(echo.put(echo_pb2.EchoRequest(text=HOLD), timeout=TIMEOUT))
        for _ in range(HELD)
    ]
    await instance.held(HELD)
    return puts


async def failures(puts: Sequence[asyncio.Task[Reply]]) -> list[BaseException | Reply]:
    return list(await asyncio.gather(*puts, return_exceptions=True))


async def stop_begun(instance: Instance) -> None:
    """Until the instance's health turns NOT_SERVING, the first step of its graceful
    stop (grpc's health Watch streams each change)."""
    async with grpc.aio.insecure_channel(instance.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        async for reply in health.Watch(health_pb2.HealthCheckRequest(service="")):
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                return
    raise AssertionError("the health watch ended before the stop began")


def running(calls: Sequence[Call], address: str, at: float) -> list[Call]:
    """Puts under way at ``at`` whose last attempt went to the node at ``address``."""
    return [
        c
        for c in calls
        if c.method == "put" and c.start <= at <= c.end and c.tried[-1:] == [address]
    ]


def touched(calls: Sequence[Call], address: str, at: float) -> list[Call]:
    """Calls that tried the node at ``address`` and ended at or after ``at``."""
    return [c for c in calls if address in c.tried and c.end >= at]


async def graceful(
    instance: Instance, held: Sequence[asyncio.Task[Reply]], loader: Loader
) -> float:
    """SIGTERM the instance while the held Puts run there; release them once its stop
    has begun and the load has left it (no attempt there for twice the QUIET after
    which a stopping node stops taking calls): from then on only the drain keeps
    them. They must all be answered there, and the process exit cleanly. Returns when
    the stop began (monotonic)."""
    instance.process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    await asyncio.wait_for(stop_begun(instance), 20)

    def left(r: Report) -> bool:
        last = r.get("attempts", {}).get(instance.address, [0, stopped])[1]
        return bool(r["t"] - max(last, stopped) > 2 * QUIET)

    await loader.until(left, within=20)
    assert not any(p.done() for p in held)  # still running as the stop went on
    assert instance.process.returncode is None  # the stop waits for them
    await instance.release()
    replies = await asyncio.wait_for(asyncio.gather(*held), TIMEOUT)
    assert [r.node for r in replies] == [instance.id] * HELD
    assert await asyncio.wait_for(instance.process.wait(), 20) == 0
    return stopped


async def test_kill_9(processes: Processes, name: str, direct: micro.Client) -> None:
    instances, loader = await start(processes, name, MDNS, seconds=8)
    victim = instances[0]
    held = await hold_puts(direct, victim)
    victim.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    before = loader.last["started"]
    report, calls = await loader.final()

    # The held Puts were running on the node when it died: reported as such.
    for outcome in await failures(held):
        assert isinstance(outcome, errors.Unavailable), outcome
    failed = outcomes(report, calls)
    assert report["started"] - before > 3 * RATE  # seconds of load after the kill
    under_way = running(calls, victim.address, killed)
    # Lost with the node: sent to it before any call there had failed. (A Put sent
    # just after the signal is lost too: the kernel resets the connections only as
    # the killed process exits. One sent once its failure was known is not.)
    noticed = min((c.end for c in failed), default=killed)
    for call in failed:
        assert call.code == "UNAVAILABLE", call  # the node went away with it
        assert call.tried[-1] == victim.address, call
        assert call.start <= noticed, call
    last_attempt = report["attempts"][victim.address][1] - killed
    assert last_attempt < TTL  # out of rotation by its failures, not by the registry
    survivors = [report["nodes"].get(i.id, 0) for i in instances[1:]]
    assert min(survivors) > report["started"] / 4
    figures(
        "kill -9",
        report,
        failed,
        load_puts_running_at_kill=len(under_way),
        last_attempt_on_dead_node=f"{last_attempt * 1000:.0f}ms after the kill",
    )


async def test_sigterm(processes: Processes, name: str, direct: micro.Client) -> None:
    instances, loader = await start(processes, name, MDNS, seconds=8)
    leaving = instances[0]
    held = await hold_puts(direct, leaving)
    stopped = await graceful(leaving, held, loader)
    exited = time.monotonic()
    report, calls = await loader.final()

    failed = outcomes(report, calls)
    assert failed == []  # those sent to it until the caches saw it leave were served
    last_attempt = report["attempts"][leaving.address][1] - stopped
    assert last_attempt < exited - stopped  # the client moved on before the server was gone
    figures(
        "SIGTERM",
        report,
        failed,
        load_puts_running_at_sigterm=len(running(calls, leaving.address, stopped)),
        exit=f"{(exited - stopped) * 1000:.0f}ms",
        last_attempt_on_leaving_node=f"{last_attempt * 1000:.0f}ms after SIGTERM",
    )


def hung_first(address: str, tried: list[str]) -> selector.StrategyFactory[Peer]:
    """Pick the node at ``address`` whenever it is offered, noting each attempt's node."""

    def factory() -> selector.Strategy[Peer]:
        def pick(nodes: Sequence[Peer]) -> Peer:
            node = next((n for n in nodes if n.address == address), nodes[0])
            tried.append(node.address)
            return node

        return pick

    return factory


async def test_sigstop_then_sigcont(processes: Processes, name: str, direct: micro.Client) -> None:
    """A hung node (stopped, not dead: its connections stay open and silent) is
    escaped through the attempt timeout, ejected, and taken back once it answers."""
    # Longer calls: the least-request strategy sends a hung node calls until its
    # count in flight passes the others', so this puts several of each kind there.
    # A TTL longer than the hang: the registry lists the node throughout, only the
    # client's own health bookkeeping can tell.
    instances, loader = await start(processes, name, MDNS, seconds=15, sleep=0.15, ttl=20)
    hung = instances[0]
    held = await hold_puts(direct, hung)
    registry = MdnsRegistry(interfaces=["127.0.0.1"])
    tried: list[str] = []
    strategy = hung_first(hung.address, tried)
    escaping = micro.Client(registry, attempt_timeout=ATTEMPT, strategy=strategy)
    try:
        await asyncio.wait_for(all_listed(registry, name, {i.id for i in instances}), 10)
        echo = echo_micro.EchoClient(name, escaping)
        await echo.get(echo_pb2.EchoRequest(), timeout=TIMEOUT)  # found and answering
        assert tried == [hung.address]
        hung.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        # A Get whose first attempt meets the hang: it must leave through the attempt
        # timeout and be answered elsewhere, long before its deadline.
        reply = await echo.get(echo_pb2.EchoRequest(), timeout=TIMEOUT)
        escaped = time.monotonic() - stopped
        assert tried[1:] == [hung.address, reply_address(instances, reply.node)]
        assert reply.node != hung.id
        assert ATTEMPT <= escaped < TIMEOUT
    finally:
        await escaping.close()
        await registry.close()
    await loader.until(lambda r: r["t"] >= stopped + ATTEMPT + 1)  # past its calls' expiry
    hung.process.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    await loader.answered(hung.id, 1, within=15)  # back in rotation after its ejection
    report, calls = await loader.final()

    # The held Puts were running there when it hung: they end DEADLINE_EXCEEDED (they
    # may yet run: not UNAVAILABLE, which would invite a retry).
    for outcome in await failures(held):
        assert isinstance(outcome, errors.DeadlineExceeded), outcome
    failed = outcomes(report, calls)
    under_way = running(calls, hung.address, stopped)
    # A hung node says nothing: its calls run out of their attempt timeout, so they
    # end DEADLINE_EXCEEDED. A Put may have run there (or will, when the node
    # resumes), so it is neither retried elsewhere nor reported UNAVAILABLE ("the
    # node is gone"). Those sent there after the hang began, until the node's
    # ejection, share that fate: it was already hung when they arrived.
    for call in failed:
        assert call.code == "DEADLINE_EXCEEDED", call  # the attempt's, not the call's
        assert call.tried[-1] == hung.address, call
        assert call in under_way or stopped <= call.start <= resumed, call
        assert call.end - call.start < TIMEOUT, call  # the attempt's limit, not the deadline
    exposed = touched(calls, hung.address, stopped)
    escaped_load = [c for c in exposed if c.code == "OK" and len(c.tried) > 1]
    figures(
        "SIGSTOP/SIGCONT",
        report,
        failed,
        load_puts_running_at_sigstop=len(under_way),
        load_calls_escaped_by_retry=len(escaped_load),
        arranged_escape=f"{escaped * 1000:.0f}ms",
    )


async def all_listed(registry: MdnsRegistry, name: str, ids: set[str]) -> None:
    """Until ``registry`` lists every node in ``ids`` under ``name``."""
    changes = registry.watch(name)
    try:
        seen = {n.id for s in await registry.get_service(name) for n in s.nodes}
        while not ids <= seen:
            seen.add((await anext(changes)).service.nodes[0].id)
    finally:
        await changes.aclose()


def reply_address(instances: Sequence[Instance], node: str) -> str:
    """The address of the instance with node id ``node``."""
    (address,) = [i.address for i in instances if i.id == node]
    return address


async def test_restart_on_a_new_port(processes: Processes, name: str, direct: micro.Client) -> None:
    instances, loader = await start(processes, name, MDNS, seconds=8)
    old = instances[0]
    held = await hold_puts(direct, old)
    stopping = await graceful(old, held, loader)
    new = await processes.instance(name, MDNS)
    assert new.address != old.address
    restarted = time.monotonic()
    await loader.answered(new.id, 20)
    found = loader.last["t"] - restarted
    report, calls = await loader.final()

    failed = outcomes(report, calls)
    assert failed == []
    figures(
        "restart on a new port",
        report,
        failed,
        load_puts_running_at_sigterm=len(running(calls, old.address, stopping)),
        new_node_in_use=f"{found:.2f}s",
    )


async def test_registry_stopped_and_restarted_empty(
    processes: Processes, name: str, nats_server: NatsServer
) -> None:
    """The registry (NATS) goes away under load and comes back empty: calls go on
    from the client's cache, and a node that appears afterwards is found."""
    nats = {"MICRO_REGISTRY": "nats", "MICRO_REGISTRY_ADDRESS": nats_server.url}
    instances, loader = await start(processes, name, nats, seconds=10)
    nats_server.stop()
    down = time.monotonic()
    await loader.until(lambda r: r["t"] >= down + 1.0)  # a second of load without it
    nats_server.start(empty=True)
    newcomer = await processes.instance(name, nats)
    back = time.monotonic()
    await loader.answered(newcomer.id, 20)
    found = loader.last["t"] - back
    report, calls = await loader.final()

    failed = outcomes(report, calls)
    assert failed == []
    assert all(report["nodes"].get(i.id, 0) > 0 for i in instances)
    figures("registry down and back empty", report, failed, new_node_in_use=f"{found:.2f}s after")
