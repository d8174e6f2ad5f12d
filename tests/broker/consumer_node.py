"""A consumer process for the at-least-once test: handles Int64Value messages of one
topic in a queue group and appends each value to a report file before acking.

    python consumer_node.py BACKEND ADDRESS TOPIC QUEUE REPORT

Prints ``ready`` once subscribed; runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from google.protobuf.wrappers_pb2 import Int64Value

sys.path.insert(0, str(Path(__file__).parent))

from backends import make_broker

from micro.broker import EventContext, typed


async def main(backend: str, address: str, topic: str, queue: str, report: str) -> None:
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    broker = make_broker(backend, address)
    await broker.connect()

    async def handle(event: Int64Value, ctx: EventContext) -> None:
        os.write(fd, b"%d\n" % event.value)  # in the OS before the ack: survives kill -9

    await broker.subscribe(topic, typed(handle), queue=queue)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
