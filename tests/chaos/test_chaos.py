"""Chaos under steady load: three Echo instances, each its own process, found through
a registry, and a load generator process calling them ~200 times a second while one
instance is killed, stopped gracefully, hung, or replaced, or the registry itself
goes away.

What must hold in every scenario: every call started has an outcome; idempotent
methods (Get, Watch) never fail. A non-idempotent one (Put) may fail only where it
was running when the node was struck, with the status that says so: UNAVAILABLE for
a killed node; DEADLINE_EXCEEDED for a hung one (it may yet run the Put: UNAVAILABLE
would invite a retry); a graceful stop fails nothing. Puts take PUT_SLEEP in their
handler and each node is struck once a fresh progress line shows Puts running on it,
so that path is exercised.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Mapping, Sequence

import pytest
from chaos_support import IDEMPOTENT, Call, Instance, Loader, Processes, Report
from nats_support import NatsServer

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
    ttl: float = 2.0,
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


async def busy(loader: Loader, address: str, puts: int = 2) -> None:
    """Until a fresh progress line (under 50 ms old) shows ``puts`` Puts running on
    the node at ``address``: strike right after."""

    def ready(r: Report) -> bool:
        running = r.get("in_flight", {}).get("put", {}).get(address, 0)
        return bool(running >= puts and time.monotonic() - r["t"] < 0.05)

    await loader.until(ready)


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


def drained(
    failed: Sequence[Call], calls: Sequence[Call], address: str, stopped: float
) -> list[Call]:
    """A graceful stop at ``stopped`` fails nothing: the Puts running on the node then
    finish, and those sent to it until the client's cache has seen it leave are
    served too (it serves until calls stop arriving). Returns the Puts running at
    the stop."""
    under_way = running(calls, address, stopped)
    assert under_way  # the drain was exercised
    assert failed == []
    return under_way


async def test_kill_9(processes: Processes, name: str) -> None:
    instances, loader = await start(processes, name, MDNS, seconds=8)
    victim = instances[0]
    await busy(loader, victim.address)
    victim.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    before = loader.last["started"]
    report, calls = await loader.final()

    failed = outcomes(report, calls)
    assert report["started"] - before > 3 * RATE  # seconds of load after the kill
    under_way = running(calls, victim.address, killed)
    assert under_way  # Puts were running on the node when it died...
    assert failed  # ...and those cut off were reported, not lost
    for call in failed:
        assert call.code == "UNAVAILABLE", call  # the node went away with it
        assert call in under_way, call  # running there at the kill, none started after
    last_attempt = report["attempts"][victim.address][1] - killed
    assert last_attempt < 1.0  # out of rotation long before its registration expires
    survivors = [report["nodes"].get(i.id, 0) for i in instances[1:]]
    assert min(survivors) > report["started"] / 4
    figures(
        "kill -9",
        report,
        failed,
        puts_running_at_kill=len(under_way),
        last_attempt_on_dead_node=f"{last_attempt * 1000:.0f}ms after the kill",
    )


async def test_sigterm(processes: Processes, name: str) -> None:
    instances, loader = await start(processes, name, MDNS, seconds=8)
    leaving = instances[0]
    await busy(loader, leaving.address)
    leaving.process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert await asyncio.wait_for(leaving.process.wait(), 20) == 0
    exited = time.monotonic()
    report, calls = await loader.final()

    failed = outcomes(report, calls)
    under_way = drained(failed, calls, leaving.address, stopped)
    last_attempt = report["attempts"][leaving.address][1] - stopped
    assert last_attempt < exited - stopped  # the client moved on before the server was gone
    figures(
        "SIGTERM",
        report,
        failed,
        puts_running_at_sigterm=len(under_way),
        exit=f"{(exited - stopped) * 1000:.0f}ms",
        last_attempt_on_leaving_node=f"{last_attempt * 1000:.0f}ms after SIGTERM",
    )


async def test_sigstop_then_sigcont(processes: Processes, name: str) -> None:
    """A hung node (stopped, not dead: its connections stay open and silent) is
    escaped through the attempt timeout, ejected, and taken back once it answers."""
    # Longer calls: the least-request strategy sends a hung node calls until its
    # count in flight passes the others', so this puts several of each kind there.
    # A TTL longer than the hang: the registry lists the node throughout, only the
    # client's own health bookkeeping can tell.
    instances, loader = await start(processes, name, MDNS, seconds=15, sleep=0.15, ttl=20)
    hung = instances[0]
    await busy(loader, hung.address)
    hung.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    await loader.until(lambda r: r["t"] >= stopped + ATTEMPT + 1)  # past its calls' expiry
    hung.process.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    await loader.answered(hung.id, 1, within=15)  # back in rotation after its ejection
    report, calls = await loader.final()

    failed = outcomes(report, calls)
    under_way = running(calls, hung.address, stopped)
    assert under_way  # Puts were running on the node when it hung...
    assert [c for c in failed if c in under_way]  # ...and those were reported failed
    # A hung node says nothing: its calls run out of their attempt timeout, so they
    # end DEADLINE_EXCEEDED. A Put may have run there (or will, when the node
    # resumes), so it is neither retried elsewhere nor reported UNAVAILABLE ("the
    # node is gone"). Those sent there after the hang began, until the node's
    # ejection, share that fate: it was already hung when they arrived.
    for call in failed:
        assert call.code == "DEADLINE_EXCEEDED", call  # the attempt's, not the call's
        assert call.tried[-1] == hung.address, call
        assert call in under_way or stopped <= call.start <= resumed, call
        assert call.end - call.start < 2 * ATTEMPT, call  # the attempt's time, not more
    exposed = touched(calls, hung.address, stopped)
    escaped = [c for c in exposed if c.code == "OK" and len(c.tried) > 1]
    assert escaped  # the hang was met, and left through the attempt timeout
    assert max(c.end - c.start for c in escaped) < TIMEOUT
    figures(
        "SIGSTOP/SIGCONT",
        report,
        failed,
        puts_running_at_sigstop=len(under_way),
        escaped_by_retry=len(escaped),
        slowest_escape=f"{max(c.end - c.start for c in escaped) * 1000:.0f}ms",
    )


async def test_restart_on_a_new_port(processes: Processes, name: str) -> None:
    instances, loader = await start(processes, name, MDNS, seconds=8)
    old = instances[0]
    await busy(loader, old.address)
    old.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert await asyncio.wait_for(old.process.wait(), 20) == 0
    new = await processes.instance(name, MDNS)
    assert new.address != old.address
    restarted = time.monotonic()
    await loader.answered(new.id, 20)
    found = loader.last["t"] - restarted
    report, calls = await loader.final()

    failed = outcomes(report, calls)
    under_way = drained(failed, calls, old.address, stopping)
    figures(
        "restart on a new port",
        report,
        failed,
        puts_running_at_sigterm=len(under_way),
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
