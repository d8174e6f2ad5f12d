"""RPC: the micro clients against raw grpcio stubs, on one greeter server.

One server process (``bench.greeter_server``) serves every round. For each mode
(async, sync) and concurrency (1, 64) the raw stub and each micro client run
interleaved rounds of fixed duration (and a cap on calls); a round is ``c`` workers
doing sequential unary calls (async: tasks on one loop; sync: threads). Reported per
variant: calls/s (median, min-max, IQR over rounds), p50/p99 latency over every call
of the measured rounds, the client process's CPU time per call, and the ratio to raw:
the median of per-round ratios (a micro round against the raw round beside it, so
load that comes and goes during the run cancels out), with their spread.

The raw baseline is what grpc's generated ``*_pb2_grpc`` stub does: a multicallable
from ``channel.unary_unary(path, request_serializer=..., response_deserializer=...,
_registered_method=True)``. A second raw stub on its own connection runs beside it as
a control: its ratio to raw shows how far two identical clients drift apart in this
run, which is the resolution of every other ratio.

Micro clients come from ``CLIENT_MODES``: each entry turns the server's address into
a ``micro.Client`` plus the stub options to call through. A mode resolving
``"greeter"`` through a registry is one more function and one more entry.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import grpc.aio

import micro
from bench import greeter, measure
from bench.environment import ROOT
from micro.registry import MemoryRegistry, Node, Service

RAW = "raw"
CONTROL = "raw-control"  # raw again on its own connection: the noise floor (an A/A test)
# An argument grpc ignores: a channel with other arguments gets its own connection.
_OWN_CONNECTION = (("bench.connection", CONTROL),)
TARGETS = {"async": 0.95, "sync": 0.90}  # required calls/s ratio micro/raw
SERVER_START_TIMEOUT_S = 30.0
ROUND_SLACK_S = 30.0  # a round that overruns its duration by this much is a hang
MAX_CALLS_PER_ROUND = 500_000


@dataclass(frozen=True)
class Settings:
    rounds: int  # per variant, measured (after one warm-up round each)
    round_s: float
    warmup_s: float
    concurrency: tuple[int, ...]

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(rounds=4, round_s=0.2, warmup_s=0.1, concurrency=(1, 64))
        return cls(rounds=20, round_s=0.5, warmup_s=0.5, concurrency=(1, 64))


# -- micro clients: one entry per way of reaching the server ---------------------


@dataclass(frozen=True)
class Target:
    """A micro client and the options its stubs call with."""

    client: micro.Client
    options: micro.CallOptions | None = None


def direct(address: str) -> Target:
    """Calls go straight to the server's address; no registry is opened."""
    return Target(micro.Client(), micro.CallOptions(address=address))


def discovered(address: str) -> Target:
    """The whole pipeline: "greeter" resolved by name through the cached registry,
    a node picked by the default strategy, the retry plan around each call."""
    registry = MemoryRegistry()
    node = Node(id="bench", address=address)
    asyncio.run(registry.register(Service(name="greeter", nodes=(node,)), ttl=3600))
    return Target(micro.Client(registry=registry))


# A mode maps the server's address to a Target. Modes are called outside any event
# loop (once for the async clients, once for the blocking ones).
CLIENT_MODES: dict[str, Callable[[str], Target]] = {"direct": direct, "discovered": discovered}


def variant(mode: str) -> str:
    return f"micro-{mode}"


# -- the server -----------------------------------------------------------------


@contextmanager
def greeter_server() -> Iterator[str]:
    """Start ``bench.greeter_server`` in its own process; yields ``host:port``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.greeter_server"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"127.0.0.1:{_port(process)}"
    finally:
        _stop(process)


def _port(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(SERVER_START_TIMEOUT_S):
            raise RuntimeError(f"greeter server silent for {SERVER_START_TIMEOUT_S}s")
    line = process.stdout.readline()
    if not line.startswith("port "):
        raise RuntimeError(f"greeter server did not start (exit {process.poll()}): {line!r}")
    return int(line.split()[1])


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


# -- rounds ---------------------------------------------------------------------


@dataclass
class Round:
    calls: int
    seconds: float
    cpu_seconds: float  # this process, every thread (grpc's own included)
    latencies_ns: list[int]


AsyncCall = Callable[[Any], Awaitable[Any]]
SyncCall = Callable[[Any], Any]


async def async_round(call: AsyncCall, request: Any, concurrency: int, seconds: float) -> Round:
    counter = itertools.count()
    latencies: list[int] = []
    cpu, start = time.process_time(), time.perf_counter_ns()
    end = start + int(seconds * 1e9)

    async def worker() -> None:
        clock, record = time.perf_counter_ns, latencies.append
        while next(counter) < MAX_CALLS_PER_ROUND and clock() < end:
            began = clock()
            await call(request)
            record(clock() - began)

    work = asyncio.gather(*(worker() for _ in range(concurrency)))
    await asyncio.wait_for(work, seconds + ROUND_SLACK_S)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    return Round(len(latencies), elapsed, time.process_time() - cpu, latencies)


def sync_round(
    pool: ThreadPoolExecutor, call: SyncCall, request: Any, concurrency: int, seconds: float
) -> Round:
    counter = itertools.count()  # next() on it is atomic under the GIL
    latencies: list[int] = []
    cpu, start = time.process_time(), time.perf_counter_ns()
    end = start + int(seconds * 1e9)

    def worker() -> None:
        clock, record = time.perf_counter_ns, latencies.append
        while next(counter) < MAX_CALLS_PER_ROUND and clock() < end:
            began = clock()
            call(request)
            record(clock() - began)

    futures = [pool.submit(worker) for _ in range(concurrency)]
    done, late = wait(futures, timeout=seconds + ROUND_SLACK_S)
    if late:
        raise RuntimeError(f"sync round still running {ROUND_SLACK_S}s after its end")
    for future in done:
        future.result()
    elapsed = (time.perf_counter_ns() - start) / 1e9
    return Round(len(latencies), elapsed, time.process_time() - cpu, latencies)


def summarise(
    mode: str, concurrency: int, rounds: dict[str, list[Round]], target: float
) -> dict[str, Any]:
    variants: dict[str, dict[str, Any]] = {}
    for name, measured in rounds.items():
        latencies = sorted(n for r in measured for n in r.latencies_ns)
        calls = sum(r.calls for r in measured)
        variants[name] = {
            "calls_per_s": measure.Spread.of([r.calls / r.seconds for r in measured]).as_dict(),
            "calls": calls,
            "p50_us": measure.quantile(latencies, 0.50) / 1e3,
            "p99_us": measure.quantile(latencies, 0.99) / 1e3,
            "cpu_us_per_call": sum(r.cpu_seconds for r in measured) / calls * 1e6,
            "rounds": [
                {"calls": r.calls, "seconds": r.seconds, "cpu_seconds": r.cpu_seconds}
                for r in measured
            ],
        }
    raw = variants[RAW]
    ratios: dict[str, dict[str, Any]] = {}
    for name, stats in variants.items():
        if name == RAW:
            continue
        control = name == CONTROL
        paired = measure.Spread.of(
            measure.paired_ratios(
                [r.calls / r.seconds for r in rounds[RAW]],
                [r.calls / r.seconds for r in rounds[name]],
            )
        )
        rate = paired.median
        ratios[name] = {
            "calls_per_s": rate,
            "calls_per_s_paired": paired.as_dict(),
            "calls_per_s_of_medians": stats["calls_per_s"]["median"] / raw["calls_per_s"]["median"],
            "p50": stats["p50_us"] / raw["p50_us"],
            "p99": stats["p99_us"] / raw["p99_us"],
            "cpu_per_call": stats["cpu_us_per_call"] / raw["cpu_us_per_call"],
            "control": control,
            "meets_target": None if control else rate >= target,
        }
    return {
        "mode": mode,
        "concurrency": concurrency,
        "target": target,
        "variants": variants,
        "ratios": ratios,
    }


# -- async and sync modes --------------------------------------------------------


def raw_stub(channel: grpc.Channel | grpc.aio.Channel, pb2: Any) -> Any:
    """SayHello as grpc's generated stub makes it."""
    return channel.unary_unary(  # type: ignore[call-arg]  # stubs predate _registered_method
        greeter.SAY_HELLO,
        request_serializer=pb2.HelloRequest.SerializeToString,
        response_deserializer=pb2.HelloReply.FromString,
        _registered_method=True,
    )


def make_targets(address: str) -> dict[str, Target]:
    return {mode: make(address) for mode, make in CLIENT_MODES.items()}


async def compare_async(
    address: str,
    targets: dict[str, Target],
    generated: greeter.Greeter,
    settings: Settings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Raw, micro (one per target) and control on one loop; closes the targets."""
    pb2 = generated.pb2
    channels = [
        grpc.aio.insecure_channel(address),
        grpc.aio.insecure_channel(address, _OWN_CONNECTION),
    ]
    calls: dict[str, AsyncCall] = {RAW: raw_stub(channels[0], pb2)}
    for mode, target in targets.items():
        stub = generated.micro.GreeterClient("greeter", target.client, options=target.options)
        calls[variant(mode)] = stub.say_hello
    calls[CONTROL] = raw_stub(channels[1], pb2)
    request = pb2.HelloRequest(name="bench")
    results = []
    try:
        for concurrency in settings.concurrency:
            log(f"rpc: async, concurrency {concurrency}")
            for call in calls.values():
                await async_round(call, request, concurrency, settings.warmup_s)
            rounds: dict[str, list[Round]] = {name: [] for name in calls}
            for index in range(settings.rounds):
                for name in measure.order(list(calls), index):
                    rounds[name].append(
                        await async_round(calls[name], request, concurrency, settings.round_s)
                    )
            results.append(summarise("async", concurrency, rounds, TARGETS["async"]))
    finally:
        for channel in channels:
            await channel.close(grace=None)
        for target in targets.values():
            await target.client.close()
    return results


def compare_sync(
    address: str,
    targets: dict[str, Target],
    generated: greeter.Greeter,
    settings: Settings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Raw, micro (one per target) and control from threads; closes the targets."""
    pb2 = generated.pb2
    channels = [grpc.insecure_channel(address), grpc.insecure_channel(address, _OWN_CONNECTION)]
    calls: dict[str, SyncCall] = {RAW: raw_stub(channels[0], pb2)}
    for mode, target in targets.items():
        stub = generated.micro.GreeterSyncClient("greeter", target.client, options=target.options)
        calls[variant(mode)] = stub.say_hello
    calls[CONTROL] = raw_stub(channels[1], pb2)
    request = pb2.HelloRequest(name="bench")
    results = []
    pool = ThreadPoolExecutor(max_workers=max(settings.concurrency), thread_name_prefix="bench")
    try:
        for concurrency in settings.concurrency:
            log(f"rpc: sync, concurrency {concurrency}")
            for call in calls.values():
                sync_round(pool, call, request, concurrency, settings.warmup_s)
            rounds: dict[str, list[Round]] = {name: [] for name in calls}
            for index in range(settings.rounds):
                for name in measure.order(list(calls), index):
                    rounds[name].append(
                        sync_round(pool, calls[name], request, concurrency, settings.round_s)
                    )
            results.append(summarise("sync", concurrency, rounds, TARGETS["sync"]))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # idle unless a round hung
        for sync_channel in channels:
            sync_channel.close()
        for target in targets.values():
            target.client.close_sync()
    return results


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = Settings.for_run(quick)
    generated = greeter.load()
    with greeter_server() as address:
        results = asyncio.run(
            compare_async(address, make_targets(address), generated, settings, log)
        )
        results += compare_sync(address, make_targets(address), generated, settings, log)
    return {
        "settings": asdict(settings),
        "client_modes": list(CLIENT_MODES),
        "targets": TARGETS,
        "results": results,
    }
