"""Overload: 2000 calls in flight against one server, with and without a cap.

Each handler awaits ``WAIT_MS`` (a call waiting on I/O). Without a cap the server
takes every call into a handler; with ``micro.Server(max_calls=CAP)`` the calls
beyond the cap are refused at once (RESOURCE_EXHAUSTED), for a client to send
elsewhere. Either way grpc drops a share of the calls CANCELLED before any handler
runs (measured: grpc's own ``maximum_concurrent_rpcs`` does not prevent that
either), and most of the latency at this load is queueing in the transport and in
the one client process, which a cap on handlers does not touch. Each variant is its
own server process (``bench.greeter_server``), called by a raw grpc.aio client (one
attempt per call, so nothing is hidden by retries) in closed loop: ``IN_FLIGHT``
workers, each making one ``SayHello`` after another. Reported per variant: p50/p99
latency of the calls served (OK), and the share of calls refused
(RESOURCE_EXHAUSTED), dropped (CANCELLED) or failed otherwise, over interleaved rounds.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import grpc.aio

from bench import greeter, measure
from bench.rpc import raw_multicallable
from bench.servers import greeter_server

IN_FLIGHT = 2000
CAP = 50  # calls in progress on the capped server
WAIT_MS = 20  # each call's handler awaits this long (I/O): calls pile up in handlers
CALL_TIMEOUT_S = 30.0  # far above any answer: a call that times out is reported as such


@dataclass(frozen=True)
class Settings:
    rounds: int
    round_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        return cls(rounds=2, round_s=0.5) if quick else cls(rounds=4, round_s=2.0)


@dataclass
class Outcomes:
    """One round: latencies of the calls served, and a count per status."""

    served_ns: list[int]
    codes: collections.Counter[str]


async def round_(call: Any, request: Any, seconds: float) -> Outcomes:
    """``IN_FLIGHT`` workers calling back to back for ``seconds``."""
    served: list[int] = []
    codes: collections.Counter[str] = collections.Counter()
    end = time.perf_counter_ns() + int(seconds * 1e9)

    async def worker() -> None:
        clock = time.perf_counter_ns
        while clock() < end:
            began = clock()
            try:
                await call(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                codes[e.code().name] += 1
            else:
                served.append(clock() - began)
                codes["OK"] += 1

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return Outcomes(served, codes)


def summarise(rounds: list[Outcomes]) -> dict[str, Any]:
    served = sorted(n for r in rounds for n in r.served_ns)
    codes: collections.Counter[str] = sum((r.codes for r in rounds), collections.Counter())
    total = sum(codes.values())
    return {
        "calls": total,
        "served": codes["OK"],
        "p50_ms": measure.quantile(served, 0.5) / 1e6 if served else None,
        "p99_ms": measure.quantile(served, 0.99) / 1e6 if served else None,
        "refused_share": codes["RESOURCE_EXHAUSTED"] / total,
        "cancelled_share": codes["CANCELLED"] / total,
        "other_failures": {
            k: n for k, n in codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED", "CANCELLED")
        },
    }


async def compare(
    addresses: dict[str, str], settings: Settings, log: Callable[[str], None]
) -> dict[str, Any]:
    generated = greeter.load()
    request = generated.pb2.HelloRequest(name="bench")
    channels = {name: grpc.aio.insecure_channel(a) for name, a in addresses.items()}
    calls = {name: raw_multicallable(c, generated.pb2, "unary") for name, c in channels.items()}
    rounds: dict[str, list[Outcomes]] = {name: [] for name in calls}
    try:
        for call in calls.values():  # warm-up: connections made, servers busy once
            await round_(call, request, settings.round_s / 4)
        for index in range(settings.rounds):
            for name in measure.order(list(calls), index):
                log(f"overload: {name}, round {index + 1}/{settings.rounds}")
                rounds[name].append(await round_(calls[name], request, settings.round_s))
    finally:
        for channel in channels.values():
            await channel.close(grace=None)
    return {name: summarise(r) for name, r in rounds.items()}


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = Settings.for_run(quick)
    with ExitStack() as stack:
        wait = ("--wait-ms", str(WAIT_MS))
        addresses = {
            "uncapped": stack.enter_context(greeter_server(*wait)),
            f"max_calls={CAP}": stack.enter_context(greeter_server(*wait, "--max-calls", str(CAP))),
        }
        variants = asyncio.run(compare(addresses, settings, log))
    return {
        "settings": asdict(settings),
        "in_flight": IN_FLIGHT,
        "cap": CAP,
        "wait_ms": WAIT_MS,
        "variants": variants,
    }
