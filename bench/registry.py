"""Registry: lookups through the cache, and failover after ``kill -9`` of an instance.

Lookups: ``CachingRegistry.cached`` (the hot path of every call) and an
``await get_service`` that hits the cache, over a ``MemoryRegistry``, against a plain
``dict.get`` in the same rounds. Both should stay a dict read: above
``LOOKUP_TARGET`` per second.

Failover: three greeter processes behind one async client under steady load; one is
killed with SIGKILL (no drain, no deregistration; its registry entry lives on for an
hour). A strategy wrapper records each attempt the client sends to the dead node, so
the figure is the time from the kill to the last such attempt: how long passive
health takes to eject it. Calls that failed for the caller are counted too (the
retry plan should hide every one: SayHello is idempotent). An ejected node is tried
again after ``micro.selector.health.EJECTION`` seconds; the window after the kill is
shorter than that, so that probe is not in the figure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import micro
from bench import greeter, measure
from bench.rpc import register
from bench.servers import GreeterProcess, greeter_servers
from micro.registry import CachingRegistry, MemoryRegistry
from micro.selector.health import EJECTION
from micro.selector.strategy import N, Strategy, least_request

LOOKUP_TARGET = 1_000_000  # lookups/s
BASELINE = "dict.get"
CALL_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Settings:
    lookups_per_round: int
    lookup_rounds: int
    kills: int
    concurrency: int
    before_kill_s: float
    after_kill_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(20_000, 3, 1, 16, 0.2, 0.5)
        return cls(200_000, 9, 5, 16, 0.5, 2.0)


# -- lookups ----------------------------------------------------------------------


async def lookup_rounds(settings: Settings) -> dict[str, list[float]]:
    """Lookups per second of each way, round by round."""
    cache = CachingRegistry(MemoryRegistry())
    await register(cache.backend, "greeter", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    plain = {"greeter": await cache.get_service("greeter")}
    count = settings.lookups_per_round

    async def dict_get() -> None:
        get = plain.get
        for _ in range(count):
            get("greeter")

    async def cached() -> None:
        get = cache.cached
        for _ in range(count):
            get("greeter")

    async def get_service() -> None:
        get = cache.get_service
        for _ in range(count):
            await get("greeter")

    ways = {BASELINE: dict_get, "cached": cached, "get_service": get_service}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for way in ways.values():  # warm-up
            await way()
        for index in range(settings.lookup_rounds):
            for name in measure.order(list(ways), index):
                began = time.perf_counter()
                await ways[name]()
                rates[name].append(count / (time.perf_counter() - began))
    finally:
        await cache.close()
    return rates


def summarise_lookups(rates: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "lookups_per_s": {name: measure.Spread.of(r).as_dict() for name, r in rates.items()},
        "ratio_to_dict": {
            name: measure.Spread.of(measure.paired_ratios(rates[BASELINE], r)).as_dict()
            for name, r in rates.items()
            if name != BASELINE
        },
        "target_per_s": LOOKUP_TARGET,
        "meets_target": {
            name: measure.Spread.of(r).median >= LOOKUP_TARGET
            for name, r in rates.items()
            if name != BASELINE
        },
    }


# -- failover ---------------------------------------------------------------------


def recording(address: str, attempts: list[float]) -> Callable[[], Strategy[N]]:
    """The default strategy, noting when it picks ``address`` (one pick = one attempt)."""

    def factory() -> Strategy[N]:
        pick: Strategy[N] = least_request()

        def recorded(nodes: Sequence[N]) -> N:
            node = pick(nodes)
            if node.address == address:
                attempts.append(time.monotonic())
            return node

        return recorded

    return factory


async def failover_round(
    servers: list[GreeterProcess], generated: greeter.Greeter, settings: Settings
) -> dict[str, Any]:
    victim = servers[0]
    registry = MemoryRegistry()
    await register(registry, "greeter", [s.address for s in servers])
    attempts: list[float] = []
    client = micro.Client(registry=registry, strategy=recording(victim.address, attempts))
    stub = generated.micro.GreeterClient("greeter", client)
    request = generated.pb2.HelloRequest(name="bench")
    failed: list[str] = []
    calls = 0
    stop = asyncio.Event()

    async def worker() -> None:
        nonlocal calls
        while not stop.is_set():
            try:
                await stub.say_hello(request, timeout=CALL_TIMEOUT_S)
            except micro.errors.Error as e:
                failed.append(str(e))
            calls += 1

    workers = [asyncio.create_task(worker()) for _ in range(settings.concurrency)]
    try:
        await asyncio.sleep(settings.before_kill_s)  # steady load on all three
        before = len(attempts)
        killed_at = time.monotonic()
        victim.kill()
        calls_at_kill = calls
        await asyncio.sleep(settings.after_kill_s)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), CALL_TIMEOUT_S * 5)
        await client.close()
    after = [t - killed_at for t in attempts[before:] if t >= killed_at]
    return {
        "attempts_before_kill": before,
        "attempts_to_dead_node": len(after),
        "last_attempt_ms": max(after) * 1e3 if after else 0.0,
        "calls_after_kill": calls - calls_at_kill,
        "failed_calls": len(failed),
        "first_failure": failed[0] if failed else None,
    }


def summarise_failover(rounds: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "last_attempt_ms": measure.Spread.of([r["last_attempt_ms"] for r in rounds]).as_dict(),
        "attempts_to_dead_node": measure.Spread.of(
            [r["attempts_to_dead_node"] for r in rounds]
        ).as_dict(),
        "failed_calls": sum(r["failed_calls"] for r in rounds),
        "window_s": settings.after_kill_s,
        "ejection_s": EJECTION,
    }


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = Settings.for_run(quick)
    generated = greeter.load()
    log("registry: lookups through the cache")
    lookups = summarise_lookups(asyncio.run(lookup_rounds(settings)))
    failover = []
    for index in range(settings.kills):
        log(f"registry: kill -9 of one of 3 instances under load ({index + 1}/{settings.kills})")
        with greeter_servers(3) as servers:
            failover.append(asyncio.run(failover_round(servers, generated, settings)))
    return {
        "settings": asdict(settings),
        "lookups": lookups,
        "failover": summarise_failover(failover, settings),
    }
