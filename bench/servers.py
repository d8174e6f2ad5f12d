"""Greeter server processes for the benchmarks: started together, stopped by PID.

Each server is its own process (``bench.greeter_server``), so the client under test
never shares an interpreter or a GIL with what it calls.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench.environment import ROOT

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GreeterProcess:
    """One running server: ``address`` is ``host:port``; replies name ``node``."""

    process: subprocess.Popen[str]
    address: str
    node: str

    def kill(self) -> None:
        """``kill -9``: no drain, no deregistration, connections reset."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def greeter_servers(
    count: int, prefix: str = "node", options: tuple[str, ...] = ()
) -> Iterator[list[GreeterProcess]]:
    """``count`` servers named ``<prefix>-0``...; they start in parallel. ``options``
    go to each (``--max-calls N``, ``--wait-ms MS``)."""
    nodes = [f"{prefix}-{i}" for i in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.greeter_server", node, *options],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for node in nodes
    ]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        yield [
            GreeterProcess(p, f"127.0.0.1:{_port(p, deadline)}", node)
            for p, node in zip(processes, nodes, strict=True)
        ]
    finally:
        for process in processes:
            stop(process)


@contextmanager
def greeter_server(*options: str) -> Iterator[str]:
    """One server (``options`` as for ``greeter_servers``); yields its ``host:port``."""
    with greeter_servers(1, "bench", options) as (server,):
        yield server.address


def _port(process: subprocess.Popen[str], deadline: float) -> int:
    # The server prints its port once it serves: wait for that line on its stdout.
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"greeter server (pid {process.pid}) silent for {START_TIMEOUT_S}s")
    line = process.stdout.readline()
    if not line.startswith("port "):
        raise RuntimeError(
            f"greeter server (pid {process.pid}) did not start (exit {process.poll()}): {line!r}"
        )
    return int(line.split()[1])


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
    if process.stdout is not None:
        process.stdout.close()
