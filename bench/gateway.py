"""Gateway: a unary JSON call over HTTP through ``micro api``'s app, against the same
call made directly with micro's client (gRPC), and against a hand-written Starlette
endpoint doing the same work (the floor for an HTTP/JSON front in Python).

One greeter process (serving reflection), one process serving the gateway and the
floor (``bench.gateway_server``), and this one making the calls: httpx for the HTTP
variants, the generated async stub for the direct one. Variants run interleaved
rounds of fixed duration at each concurrency (``bench.load``); reported: calls/s,
p50/p99, and the ratios gateway/direct and gateway/floor, paired round by round.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import httpx

import micro
from bench import greeter, load
from bench.environment import ROOT
from bench.gateway_server import PATH
from bench.rpc import register
from bench.servers import START_TIMEOUT_S, STOP_TIMEOUT_S, greeter_server
from micro.registry import MemoryRegistry

DIRECT, GATEWAY, FLOOR = "micro-client", "gateway", "starlette"


def settings_for(quick: bool) -> load.Settings:
    if quick:
        return load.Settings(rounds=3, round_s=0.1, warmup_s=0.05, concurrency=(1, 8))
    return load.Settings(rounds=8, round_s=0.5, warmup_s=0.2, concurrency=(1, 16, 64))


@contextmanager
def http_servers(greeter_address: str) -> Iterator[tuple[str, str]]:
    """The gateway's and the floor's base URLs, served by ``bench.gateway_server``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_server", greeter_address],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT_S):
                raise RuntimeError(f"gateway server silent for {START_TIMEOUT_S}s")
        line = process.stdout.readline()
        if not line.startswith("ports "):
            raise RuntimeError(f"gateway server did not start (exit {process.poll()}): {line!r}")
        gateway, floor = line.split()[1:]
        yield f"http://127.0.0.1:{gateway}", f"http://127.0.0.1:{floor}"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()


async def compare(
    greeter_address: str, urls: tuple[str, str], settings: load.Settings, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    generated = greeter.load()
    results = []
    # Nagle's algorithm off, as browsers and curl have it: httpx sends a request's
    # headers and body in two writes, and the second would wait for a delayed ACK.
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=max(settings.concurrency)),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    registry = MemoryRegistry()
    await register(registry, "greeter", [greeter_address])
    async with (
        micro.Client(registry) as client,
        httpx.AsyncClient(transport=transport, timeout=30.0) as http,
    ):
        stub: Any = generated.micro.GreeterClient("greeter", client)
        body = {"name": "bench"}

        async def over(url: str) -> Any:
            answer = await http.post(url, json=body)
            answer.raise_for_status()
            return answer.json()

        calls: dict[str, load.AsyncCall] = {
            DIRECT: stub.say_hello,
            GATEWAY: lambda _: over(urls[0] + PATH),
            FLOOR: lambda _: over(urls[1] + PATH),
        }
        request = generated.pb2.HelloRequest(name="bench")
        for call in calls.values():  # each answers before anything is measured
            await call(request)
        for concurrency in settings.concurrency:
            rounds = await load.interleaved(calls, request, concurrency, settings)
            direct = load.versus(rounds[DIRECT], rounds[GATEWAY])
            floor = load.versus(rounds[FLOOR], rounds[GATEWAY])
            log(
                f"gateway c={concurrency}: {direct['calls_per_s']:.2f}x direct, "
                f"{floor['calls_per_s']:.2f}x floor"
            )
            results.append(
                {
                    "concurrency": concurrency,
                    "variants": {n: load.variant_stats(r) for n, r in rounds.items()},
                    "gateway_vs_direct": direct,
                    "gateway_vs_floor": floor,
                }
            )
    return results


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = settings_for(quick)
    began = time.perf_counter()
    with greeter_server("--reflection") as address, http_servers(address) as urls:
        results = asyncio.run(compare(address, urls, settings, log))
    return {
        "settings": asdict(settings),
        "results": results,
        "duration_s": time.perf_counter() - began,
    }
