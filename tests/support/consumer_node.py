"""A consumer process for the at-least-once test: handles Int64Value messages of one
topic in a queue group and tells the test what it does.

    python consumer_node.py BACKEND ADDRESS TOPIC QUEUE [HOLD_AFTER]

On stdout: ``ready`` once subscribed; then per message ``+VALUE`` when its handler
starts and ``VALUE ATTEMPT`` once it is handled, before the ack. Each line is one
``os.write`` to the pipe, so what was written before a ``kill -9`` is still there for
the test to read. With ``HOLD_AFTER``, the handlers started after the first
``HOLD_AFTER`` never finish: the process ends up with every handler it may run at
once blocked, a state that holds until the test kills it. SIGTERM closes the broker
(the handlers running finish and are acked, nothing more is taken) and exits 0; a
process holding handlers is only ever killed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys

from backends import make_broker
from google.protobuf.wrappers_pb2 import Int64Value

from micro.broker import EventContext, typed


def report(line: str) -> None:
    os.write(1, line.encode() + b"\n")  # unbuffered: in the pipe before anything else


async def main(backend: str, address: str, topic: str, queue: str, hold_after: str = "") -> None:
    broker = make_broker(backend, address)
    await broker.connect()
    starts = itertools.count(1)
    limit = int(hold_after) if hold_after else None
    never = asyncio.Event()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        report(f"+{event.value}")
        if limit is not None and next(starts) > limit:
            await never.wait()
        await asyncio.sleep(0)  # yields once, as real work would
        report(f"{event.value} {ctx.attempt}")

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await broker.subscribe(topic, typed(handle), queue=queue)
    report("ready")
    await stop.wait()
    await broker.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
