"""A consumer process for the at-least-once test: handles Int64Value messages of one
topic in a queue group, PACE seconds each, and tells the test what it does.

    python consumer_node.py BACKEND ADDRESS TOPIC QUEUE

On stdout: ``ready`` once subscribed; then per message ``+VALUE`` when its handler
starts and ``VALUE ATTEMPT`` once it is handled, before the ack. Each line is one
``os.write`` to the pipe, so what was written before a ``kill -9`` is still there for
the test to read. SIGTERM closes the broker (the handlers running finish and are
acked, nothing more is taken) and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from backends import make_broker
from google.protobuf.wrappers_pb2 import Int64Value

from micro.broker import EventContext, typed

# Work per message: with the broker's 64 handlers at a time, at most 3 200 messages a
# second, so 10 000 take three seconds or more and a kill after the first thousand
# lands mid-stream, with handlers running.
PACE = 0.02


def report(line: str) -> None:
    os.write(1, line.encode() + b"\n")  # unbuffered: in the pipe before anything else


async def main(backend: str, address: str, topic: str, queue: str) -> None:
    broker = make_broker(backend, address)
    await broker.connect()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        report(f"+{event.value}")
        await asyncio.sleep(PACE)  # the work itself
        report(f"{event.value} {ctx.attempt}")

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await broker.subscribe(topic, typed(handle), queue=queue)
    report("ready")
    await stop.wait()
    await broker.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
