"""Scale: one client over 1, 3 and 10 server processes; selection over 10 000 nodes.

Servers: the micro client finds the instances through a registry and balances with
its default strategy; the baseline is grpc's own client-side balancing, one channel
with ``round_robin`` over the same addresses. Both run interleaved rounds at one
concurrency; replies name the instance that answered, so the spread of calls over
instances (max/min share: 1.0 is even) comes with the throughput.

Selection: the work a call does before it sends (route lookup, retry plan, node
pick: ``Stub._start``) timed with 1, 100 and 10 000 nodes registered. It should not
grow with the node count: the route is rebuilt only when the registry changes (that
rebuild, ``route_build_ms``, is reported apart).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import grpc.aio

import micro
from bench import greeter, load, measure
from bench.rpc import raw_multicallable, register
from bench.servers import greeter_servers
from micro.registry import MemoryRegistry

MICRO = "micro-discovered"
RAW_RR = "raw-round-robin"
FLAT_TARGET = 2.0  # selection with the most nodes may cost at most this times one node's


@dataclass(frozen=True)
class Settings:
    servers: tuple[int, ...]
    concurrency: int
    rounds: int
    round_s: float
    warmup_s: float
    nodes: tuple[int, ...]
    selection_rounds: int
    selection_round_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls((1, 3, 10), 64, 3, 0.1, 0.05, (1, 100, 10_000), 3, 0.05)
        return cls((1, 3, 10), 64, 8, 0.35, 0.2, (1, 100, 10_000), 9, 0.2)


# -- servers ------------------------------------------------------------------------


def counting(call: load.AsyncCall, counts: Counter[str]) -> load.AsyncCall:
    """``call``, counting replies per answering instance."""

    async def counted(request: Any) -> None:
        reply = await call(request)
        counts[reply.node] += 1

    return counted


def balance(counts: Counter[str], instances: int) -> dict[str, Any]:
    shares = [counts.get(f"node-{i}", 0) for i in range(instances)]
    low = min(shares)
    return {"calls": shares, "max_over_min": max(shares) / low if low else None}


async def compare_servers(
    addresses: list[str], generated: greeter.Greeter, settings: Settings
) -> dict[str, Any]:
    pb2 = generated.pb2
    registry = MemoryRegistry()
    await register(registry, "greeter", addresses)
    client = micro.Client(registry=registry)
    channel = grpc.aio.insecure_channel(
        "ipv4:" + ",".join(addresses), options=(("grpc.lb_policy_name", "round_robin"),)
    )
    counts: dict[str, Counter[str]] = {MICRO: Counter(), RAW_RR: Counter()}
    calls = {
        RAW_RR: counting(raw_multicallable(channel, pb2, "unary"), counts[RAW_RR]),
        MICRO: counting(generated.micro.GreeterClient("greeter", client).say_hello, counts[MICRO]),
    }
    request = pb2.HelloRequest(name="bench")
    c = settings.concurrency
    try:
        for call in calls.values():
            await load.async_round(call, request, c, settings.warmup_s)
        for counter in counts.values():
            counter.clear()
        rounds: dict[str, list[load.Round]] = {name: [] for name in calls}
        for index in range(settings.rounds):
            for name in measure.order(list(calls), index):
                rounds[name].append(
                    await load.async_round(calls[name], request, c, settings.round_s)
                )
    finally:
        await channel.close(grace=None)
        await client.close()
    ratio = load.versus(rounds[RAW_RR], rounds[MICRO])
    return {
        "servers": len(addresses),
        "concurrency": c,
        "variants": {name: load.variant_stats(measured) for name, measured in rounds.items()},
        "ratios": {MICRO: ratio},
        "balance": {name: balance(counts[name], len(addresses)) for name in calls},
    }


# -- selection ------------------------------------------------------------------------


@dataclass
class Selector:
    """A client whose registry holds ``nodes`` instances of "greeter" (fake addresses:
    nothing is dialled), and the call start to time."""

    nodes: int
    client: micro.Client
    start: Callable[[], object]
    route_build_ms: float


async def selector(nodes: int, generated: greeter.Greeter) -> Selector:
    registry = MemoryRegistry()
    await register(registry, "greeter", [f"127.0.0.1:{10_000 + i}" for i in range(nodes)])
    client = micro.Client(registry=registry)
    await client.registry.get_service("greeter")  # fills the cache, as a first call does
    stub = generated.micro.GreeterClient("greeter", client)
    method = generated.micro.GreeterMethods.say_hello

    def start() -> object:
        return stub._start(method, None, None)

    began = time.perf_counter()
    start()  # builds the route
    return Selector(nodes, client, start, (time.perf_counter() - began) * 1e3)


def selection_round(start: Callable[[], object], seconds: float) -> float:
    """Nanoseconds per call start, over as many as fit in ``seconds``."""
    batch = 64
    count = 0
    began = time.perf_counter_ns()
    end = began + int(seconds * 1e9)
    while time.perf_counter_ns() < end and count < load.MAX_CALLS_PER_ROUND:
        for _ in range(batch):
            start()
        count += batch
    return (time.perf_counter_ns() - began) / count


async def compare_selection(generated: greeter.Greeter, settings: Settings) -> dict[str, Any]:
    selectors = {str(n): await selector(n, generated) for n in settings.nodes}
    try:
        for s in selectors.values():
            selection_round(s.start, settings.selection_round_s / 2)  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in selectors}
        for index in range(settings.selection_rounds):
            for name in measure.order(list(selectors), index):
                samples[name].append(
                    selection_round(selectors[name].start, settings.selection_round_s)
                )
    finally:
        for s in selectors.values():
            await s.client.close()
    fewest = str(min(settings.nodes))
    ratios = {
        name: measure.Spread.of(measure.paired_ratios(samples[fewest], samples[name])).as_dict()
        for name in selectors
        if name != fewest
    }
    most = str(max(settings.nodes))
    return {
        "ns_per_selection": {name: measure.Spread.of(v).as_dict() for name, v in samples.items()},
        "route_build_ms": {name: s.route_build_ms for name, s in selectors.items()},
        "ratio_to_fewest": ratios,
        "flat_target": FLAT_TARGET,
        "flat": ratios[most]["median"] <= FLAT_TARGET,
    }


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = Settings.for_run(quick)
    generated = greeter.load()
    results = []
    with greeter_servers(max(settings.servers)) as servers:
        for count in settings.servers:
            log(f"scale: {count} server(s), concurrency {settings.concurrency}")
            addresses = [s.address for s in servers[:count]]
            results.append(asyncio.run(compare_servers(addresses, generated, settings)))
    log(f"scale: selection with {', '.join(map(str, settings.nodes))} nodes")
    selection = asyncio.run(compare_selection(generated, settings))
    return {"settings": asdict(settings), "servers": results, "selection": selection}
