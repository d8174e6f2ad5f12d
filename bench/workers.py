"""Workers: calls/s of one service served by ``micro run --workers N``, N = 1 … cores.

Each worker count runs as its own ``micro run bench.workers --workers N`` (the bench
greeter, answering at once) on the loopback mDNS registry; the baseline is a plain
grpc.aio server, one process, called through a raw channel. Client processes (as many
as the cores, at least two, each ``CONCURRENCY`` calls at a time) drive every variant
in the same interleaved rounds, so the client side costs the same for each; a round's
rate is the sum over the clients. Every server stays up for the whole run and idles
while another is measured.

Reported per worker count: calls/s, the ratio to one worker (scaling; the goal on a
host with enough cores is >= 0.8 x N) and to the raw single-process server. Clients and
servers share the machine: on a host with few cores the clients take cores the workers
would use, so there the figures show that contention, not the supervisor's limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import grpc.aio

import micro
from bench import greeter, load, measure
from bench.environment import ROOT
from bench.greeter_server import handler
from bench.rpc import raw_multicallable
from bench.servers import greeter_server, stop

RAW = "raw-1-process"
GOAL = 0.8  # of N times one worker's calls/s, on a host with a core per worker and client
START_TIMEOUT_S = 90.0  # N workers importing grpc at once on a busy machine
STOP_TIMEOUT_S = 30.0  # a client process ends its round and closes
SERVICE = "BENCH_WORKERS_SERVICE"  # the variable naming the service the workers serve


@dataclass(frozen=True)
class Settings:
    workers: tuple[int, ...]
    clients: int
    concurrency: int  # calls in flight per client process
    rounds: int
    round_s: float
    warmup_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        cores = len(os.sched_getaffinity(0))
        counts = tuple(range(1, cores + 1))
        clients = max(2, cores)
        if quick:
            return cls(counts[:2], clients, 32, 2, 0.3, 0.2)
        return cls(counts, clients, 32, 6, 1.5, 1.0)


def create_service() -> micro.Service:
    """A worker's service: the bench greeter, its replies naming the worker."""
    service = micro.Service(os.environ[SERVICE], grace=5.0)
    service.handle(handler(greeter.load(), service.id))
    return service


# -- the client processes -------------------------------------------------------------


async def _client(concurrency: int) -> None:
    """Rounds as stdin asks (``raw ADDRESS SECONDS`` or ``micro SERVICE SECONDS``), each
    answered with one JSON line on stdout; channels and clients are kept between them."""
    generated = greeter.load()
    request = generated.pb2.HelloRequest(name="bench")
    client = micro.Client(config=micro.Config(registry="mdns"))
    channels: dict[str, grpc.aio.Channel] = {}
    calls: dict[str, load.AsyncCall] = {}
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            kind, target, seconds = line.split()
            if target not in calls:
                if kind == "raw":
                    channels[target] = grpc.aio.insecure_channel(target)
                    calls[target] = raw_multicallable(channels[target], generated.pb2, "unary")
                else:
                    calls[target] = generated.micro.GreeterClient(target, client).say_hello
            measured = await load.async_round(calls[target], request, concurrency, float(seconds))
            print(json.dumps({"calls": measured.calls, "seconds": measured.seconds}), flush=True)
    finally:
        for channel in channels.values():
            await channel.close(grace=None)
        await client.close()


class Clients:
    """The client processes: a round is one command to each, started together."""

    def __init__(self, count: int, concurrency: int) -> None:
        command = [sys.executable, "-m", "bench.workers", "client", str(concurrency)]
        self.processes = [
            subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for _ in range(count)
        ]

    def round(self, kind: str, target: str, seconds: float) -> float:
        """Calls/s over every client in one round."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"{kind} {target} {seconds}\n")
            process.stdin.flush()
        answers = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()  # each round ends by its time (+ slack)
            if not line:
                raise RuntimeError(f"bench client (pid {process.pid}) exited: {process.wait()}")
            answers.append(json.loads(line))
        calls: int = sum(a["calls"] for a in answers)
        longest: float = max(a["seconds"] for a in answers)
        return calls / longest

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()  # ends its loop
        for process in self.processes:
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


# -- the servers ------------------------------------------------------------------------


@contextmanager
def supervised(workers: int) -> Iterator[str]:
    """``micro run bench.workers --workers N`` until every worker serves: its service name."""
    name = f"bench-workers-{workers}-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MICRO_REGISTRY": "mdns", SERVICE: name}
    env.pop("MICRO_SERVER_ADDRESS", None)  # port 0: each worker picks its own
    process = subprocess.Popen(
        [sys.executable, "-m", "micro", "run", "bench.workers", "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read, args=(process, lines), daemon=True)
    reader.start()
    try:
        serving = 0
        deadline = time.monotonic() + START_TIMEOUT_S
        while serving < workers:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{workers} workers not serving in {START_TIMEOUT_S}s") from None
            serving += bool(re.match(rf"micro run: {name} serving on ", line))
        yield name
    finally:
        stop(process)  # the supervisor drains its workers, idle by then
        reader.join(STOP_TIMEOUT_S)  # its stderr ends with it
        assert process.stderr is not None
        process.stderr.close()


def _read(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        lines.put(line)


# -- the section -------------------------------------------------------------------------


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    return compare(Settings.for_run(quick), log)


def compare(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    log(
        f"workers: {', '.join(map(str, settings.workers))} worker(s) and a raw server, "
        f"{settings.clients} client processes x {settings.concurrency} calls in flight"
    )
    with ExitStack() as stack:
        targets = {RAW: ("raw", stack.enter_context(greeter_server()))}
        for count in settings.workers:
            targets[str(count)] = ("micro", stack.enter_context(supervised(count)))
        clients = Clients(settings.clients, settings.concurrency)
        stack.callback(clients.close)
        for kind, target in targets.values():
            clients.round(kind, target, settings.warmup_s)
        rates: dict[str, list[float]] = {name: [] for name in targets}
        for index in range(settings.rounds):
            for name in measure.order(list(targets), index):
                rates[name].append(clients.round(*targets[name], settings.round_s))
    one = rates[str(settings.workers[0])]
    results = []
    for count in settings.workers:
        mine = rates[str(count)]
        scaling = measure.Spread.of(measure.paired_ratios(one, mine))
        versus_raw = measure.Spread.of(measure.paired_ratios(rates[RAW], mine))
        results.append(
            {
                "workers": count,
                "calls_per_s": measure.Spread.of(mine).as_dict(),
                "ratio_to_one": scaling.as_dict(),
                "ratio_to_raw": versus_raw.as_dict(),
                "efficiency": scaling.median / count,  # of N x one worker; goal GOAL
            }
        )
    return {
        "settings": asdict(settings),
        "raw_calls_per_s": measure.Spread.of(rates[RAW]).as_dict(),
        "results": results,
        "goal": GOAL,
    }


if __name__ == "__main__":
    if sys.argv[1:2] != ["client"]:
        raise SystemExit("usage: python -m bench.workers client CONCURRENCY (run by the bench)")
    asyncio.run(_client(int(sys.argv[2])))
