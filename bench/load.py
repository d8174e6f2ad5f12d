"""Closed-loop load: ``c`` workers each making one call after another for a round.

A round runs for a fixed time (and a cap on calls); async workers are tasks on one
loop, blocking workers are threads. The same figures come out of every round, so
each section compares its variants the same way (``summarise``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from bench import measure

ROUND_SLACK_S = 30.0  # a round that overruns its duration by this much is a hang
MAX_CALLS_PER_ROUND = 500_000

AsyncCall = Callable[[Any], Awaitable[Any]]
SyncCall = Callable[[Any], Any]


@dataclass
class Round:
    calls: int
    seconds: float
    cpu_seconds: float  # this process, every thread (grpc's own included)
    latencies_ns: list[int]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu_seconds / self.calls * 1e6

    @property
    def p50_us(self) -> float:
        return measure.quantile(sorted(self.latencies_ns), 0.5) / 1e3


async def async_round(call: AsyncCall, request: Any, concurrency: int, seconds: float) -> Round:
    counter = itertools.count()
    latencies: list[int] = []
    cpu, start = time.process_time(), time.perf_counter_ns()
    end = start + int(seconds * 1e9)

    async def worker() -> None:
        clock, record = time.perf_counter_ns, latencies.append
        while True:  # one call at least: a round on a starved machine still has a rate
            began = clock()
            await call(request)
            record(clock() - began)
            if next(counter) >= MAX_CALLS_PER_ROUND or clock() >= end:
                return

    work = asyncio.gather(*(worker() for _ in range(concurrency)))
    await asyncio.wait_for(work, seconds + ROUND_SLACK_S)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    return Round(len(latencies), elapsed, time.process_time() - cpu, latencies)


@dataclass(frozen=True)
class Settings:
    """How a section measures: per concurrency, a warm-up round of each variant, then
    ``rounds`` measured rounds of each, ``round_s`` long."""

    rounds: int
    round_s: float
    warmup_s: float
    concurrency: tuple[int, ...]


async def interleaved(
    calls: dict[str, AsyncCall], request: Any, concurrency: int, settings: Settings
) -> dict[str, list[Round]]:
    """Each of ``calls`` warmed up, then measured round by round, in an order that
    changes per round (``measure.order``): rounds side by side share the machine's
    state, so ``versus`` can pair them."""
    for call in calls.values():
        await async_round(call, request, concurrency, settings.warmup_s)
    measured: dict[str, list[Round]] = {name: [] for name in calls}
    for index in range(settings.rounds):
        for name in measure.order(list(calls), index):
            round_ = await async_round(calls[name], request, concurrency, settings.round_s)
            measured[name].append(round_)
    return measured


def interleaved_sync(
    pool: ThreadPoolExecutor,
    calls: dict[str, SyncCall],
    request: Any,
    concurrency: int,
    settings: Settings,
) -> dict[str, list[Round]]:
    """``interleaved`` for blocking calls, made from ``pool``'s threads."""
    for call in calls.values():
        sync_round(pool, call, request, concurrency, settings.warmup_s)
    measured: dict[str, list[Round]] = {name: [] for name in calls}
    for index in range(settings.rounds):
        for name in measure.order(list(calls), index):
            round_ = sync_round(pool, calls[name], request, concurrency, settings.round_s)
            measured[name].append(round_)
    return measured


def sync_round(
    pool: ThreadPoolExecutor, call: SyncCall, request: Any, concurrency: int, seconds: float
) -> Round:
    counter = itertools.count()  # next() on it is atomic under the GIL
    latencies: list[int] = []
    cpu, start = time.process_time(), time.perf_counter_ns()
    end = start + int(seconds * 1e9)

    def worker() -> None:
        clock, record = time.perf_counter_ns, latencies.append
        while True:  # one call at least: a thread started after the round's end counts
            began = clock()
            call(request)
            record(clock() - began)
            if next(counter) >= MAX_CALLS_PER_ROUND or clock() >= end:
                return

    futures = [pool.submit(worker) for _ in range(concurrency)]
    done, late = wait(futures, timeout=seconds + ROUND_SLACK_S)
    if late:
        raise RuntimeError(f"blocking round still running {ROUND_SLACK_S}s after its end")
    for future in done:
        future.result()
    elapsed = (time.perf_counter_ns() - start) / 1e9
    return Round(len(latencies), elapsed, time.process_time() - cpu, latencies)


def variant_stats(measured: Sequence[Round]) -> dict[str, Any]:
    """One variant over its rounds: calls/s with spread, latency quantiles over every
    call (and p50's spread over rounds), client CPU per call."""
    latencies = sorted(n for r in measured for n in r.latencies_ns)
    calls = sum(r.calls for r in measured)
    return {
        "calls_per_s": measure.Spread.of([r.rate for r in measured]).as_dict(),
        "calls": calls,
        "p50_us": measure.quantile(latencies, 0.50) / 1e3,
        "p99_us": measure.quantile(latencies, 0.99) / 1e3,
        "p50_us_per_round": measure.Spread.of([r.p50_us for r in measured]).as_dict(),
        "cpu_us_per_call": sum(r.cpu_seconds for r in measured) / calls * 1e6,
        "rounds": [
            {"calls": r.calls, "seconds": r.seconds, "cpu_seconds": r.cpu_seconds} for r in measured
        ],
    }


def versus(baseline: Sequence[Round], other: Sequence[Round]) -> dict[str, Any]:
    """``other`` against ``baseline``, round by round (rounds side by side share the
    machine's state): calls/s ratio, and the extra CPU and p50 latency per call in
    microseconds (the overhead of ``other``), each as a median with its spread."""
    ratio = measure.Spread.of(
        measure.paired_ratios([r.rate for r in baseline], [r.rate for r in other])
    )
    cpu = measure.paired_differences(
        [r.cpu_us_per_call for r in baseline], [r.cpu_us_per_call for r in other]
    )
    p50 = measure.paired_differences([r.p50_us for r in baseline], [r.p50_us for r in other])
    return {
        "calls_per_s": ratio.median,
        "calls_per_s_paired": ratio.as_dict(),
        "overhead_cpu_us": measure.Spread.of(cpu).as_dict(),
        "overhead_p50_us": measure.Spread.of(p50).as_dict(),
    }
