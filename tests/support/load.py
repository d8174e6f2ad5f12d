"""A load generator for chaos scenarios, as its own process:

python load.py --service echo --rate 200 --count 2000 --methods get,put --out calls.json

Starts calls at a steady rate (open loop: a slow or hung node does not slow the
schedule), up to ``--count``, through a ``micro.Client`` whose registry comes from
``MICRO_REGISTRY`` / ``MICRO_REGISTRY_ADDRESS``. Every few tenths of a second it
prints one JSON line of progress (calls started, outcomes by method and status code,
answers by node, attempts by node address with the time of the last, and the calls
in flight by method and the address of their current attempt); at the end it
writes every call (method, start, end, code, addresses tried) to ``--out`` and prints
a last line with ``"final": true``. Times are ``time.monotonic()``, which on Linux is
one clock for every process, so the test can compare them with when it struck.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

import runtime_support  # noqa: F401  (generates echo.proto, puts it on the path)

import echo_micro  # isort: skip
import echo_pb2  # isort: skip

import micro
from micro import errors, selector
from micro.pool import Peer

tried: contextvars.ContextVar[list[str]] = contextvars.ContextVar("tried")
"""The addresses the current call's attempts went to, in order."""


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = 0
        self.outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.nodes: collections.Counter[str] = collections.Counter()
        self.attempts: dict[str, list[float]] = {}  # address: [count, last monotonic time]
        self.calls: list[tuple[str, float, float, str, list[str]]] = []
        self.running: dict[int, tuple[str, list[str]]] = {}  # method, addresses tried
        self.ids = itertools.count()
        self.seconds = 0.0

    def strategy(self) -> selector.Strategy[Peer]:
        """The default strategy, noting each attempt's node (a strategy is called
        once per attempt, in the calling task)."""
        factory: selector.StrategyFactory[Peer] = selector.strategy("least_request")
        pick = factory()

        def record(nodes: Sequence[Peer]) -> Peer:
            node: Peer = pick(nodes)
            tried.get().append(node.address)
            entry = self.attempts.setdefault(node.address, [0, 0.0])
            entry[0] += 1
            entry[1] = time.monotonic()
            return node

        return record

    async def call(self, echo: echo_micro.EchoClient, method: str) -> None:
        addresses: list[str] = []
        tried.set(addresses)
        sleep = self.args.put_sleep if method == "put" else self.args.sleep
        request = echo_pb2.EchoRequest(text=method, sleep=sleep)
        timeout = self.args.timeout
        start = time.monotonic()
        code = "OK"
        key = next(self.ids)
        self.running[key] = (method, addresses)
        try:
            if method == "watch":
                replies = [r async for r in echo.watch(request, timeout=timeout)]
                assert len(replies) == 3, f"a Watch ended after {len(replies)} replies"
                node = replies[0].node
            elif method == "put":
                node = (await echo.put(request, timeout=timeout)).node
            else:
                node = (await echo.get(request, timeout=timeout)).node
            self.nodes[node] += 1
        except errors.Error as e:
            code = e.code.name
        except Exception as e:  # reported, never lost: the test fails on it
            code = f"{type(e).__name__}: {e}"
        finally:
            del self.running[key]
            self.outcomes[method][code] += 1
            self.calls.append((method, start, time.monotonic(), code, addresses))

    def progress(self, **extra: Any) -> None:
        in_flight: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        for method, addresses in self.running.values():
            if addresses:
                in_flight[method][addresses[-1]] += 1
        line = {
            "t": time.monotonic(),
            "started": self.started,
            "outcomes": self.outcomes,
            "nodes": self.nodes,
            "attempts": self.attempts,
            "in_flight": in_flight,
            **extra,
        }
        print(json.dumps(line), flush=True)

    async def reporter(self) -> None:
        while True:
            self.progress()
            await asyncio.sleep(self.args.report_every)

    async def run(self) -> None:
        args = self.args
        client = micro.Client(attempt_timeout=args.attempt_timeout, strategy=self.strategy)
        echo = echo_micro.EchoClient(args.service, client)
        methods = itertools.cycle(args.methods.split(","))
        reporter = asyncio.ensure_future(self.reporter())
        calls: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for i in range(args.count):
            due = begin + i / args.rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            task = loop.create_task(self.call(echo, next(methods)))
            self.started += 1
            calls.add(task)
            task.add_done_callback(calls.discard)
        # Every call ends by its deadline; the bound only guards against a bug.
        await asyncio.wait_for(asyncio.gather(*calls), args.timeout * 4 + 5)
        reporter.cancel()
        await client.close()
        self.seconds = loop.time() - begin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", default="echo")
    parser.add_argument("--rate", type=float, default=200.0, help="calls started per second")
    parser.add_argument("--count", type=int, default=2000, help="calls in all")
    parser.add_argument("--methods", default="get,put", help="cycled: get, put, watch")
    parser.add_argument("--sleep", type=float, default=0.0, help="handler time per call")
    parser.add_argument("--put-sleep", type=float, default=0.0, help="handler time per Put")
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline per call")
    parser.add_argument("--attempt-timeout", type=float, default=None)
    parser.add_argument("--report-every", type=float, default=0.2)
    parser.add_argument("--out", required=True, help="file for every call's record")
    load = Load(parser.parse_args())
    asyncio.run(load.run())
    with open(load.args.out, "w") as out:
        json.dump(load.calls, out)
    load.progress(final=True, seconds=load.seconds)  # after the file: it is complete


if __name__ == "__main__":
    main()
