"""An echo service whose handlers are plain ``def`` (run in worker threads): a call
with text HOLD blocks its thread on an event until the test releases it, or, in a
child process run as a script, until HOLD_BOUND passes (so even a test that fails
ends). Run as a script: prints its address, one line per call that arrived, and when
its stop ended."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable

import echo_micro
import echo_pb2

import micro

HOLD = "hold"
# How long a held call blocks its thread at most: far past any bound a test waits on.
HOLD_BOUND = 60.0


class Blocking(echo_micro.EchoHandler):
    """``def`` handlers; ``on_arrival(n)`` is called in the handler thread."""

    def __init__(self, node: str = "") -> None:
        self.node = node
        self.release = threading.Event()
        self.on_arrival: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self.received = 0

    def get(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:
        with self._lock:
            self.received += 1
            received = self.received
        if self.on_arrival is not None:
            self.on_arrival(received)
        if request.text == HOLD:
            self.release.wait(HOLD_BOUND)
        return echo_pb2.EchoReply(text=request.text, node=self.node)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grace", type=float, required=True, help="seconds, for the stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    async def serve() -> None:
        config = micro.Config(registry="memory")
        svc = micro.Service("blocking", config=config, grace=args.grace)
        handler = Blocking(svc.id)
        handler.on_arrival = lambda n: print(json.dumps({"received": n}), flush=True)
        svc.handle(handler)
        await svc.start()
        print(json.dumps({"address": svc.address}), flush=True)
        await svc.serve()  # until SIGTERM
        # When the stop ended (CLOCK_MONOTONIC: one clock for all processes on Linux).
        print(json.dumps({"stopped": time.monotonic()}), flush=True)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
