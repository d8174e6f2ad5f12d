"""The Echo service for ``micro run worker_app --workers N`` in the workers tests:

WORKERS_TEST_SERVICE=echo-1234 micro run worker_app --workers 2
(with tests/workers, tests/support and tests/gen/runtime on the path)

Each worker reports on stderr, one line each: ``held ID`` when a call with text HOLD
reaches its handler (held calls answer once the worker begins to stop, so they are in
flight through the stop by arrangement), and ``handled VALUE by ID`` per message of
the topic ``WORKERS_TEST_TOPIC`` (when set), received in the queue ``q``.
"""

from __future__ import annotations

import os
import sys

from echo_node import Echo
from google.protobuf.wrappers_pb2 import Int64Value

import micro

GRACE = 20.0  # seconds: far more than a held call needs to answer once released


class Worker(micro.Service):
    """A service whose calls held in Echo are let go as it begins to stop."""

    echo: Echo

    async def stop(self, grace: float | None = None) -> None:
        if self._record is not None:  # only a started worker holds calls
            self.echo.release.set()
        await super().stop(grace)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def create_service() -> micro.Service:
    service = Worker(os.environ["WORKERS_TEST_SERVICE"], grace=GRACE)
    service.echo = Echo(service.id)
    service.echo.on_hold = lambda held: say(f"held {service.id}")
    service.handle(service.echo)
    topic = os.environ.get("WORKERS_TEST_TOPIC")
    if topic:

        @service.subscribe(topic, queue="q")
        async def handled(event: Int64Value, ctx: micro.EventContext) -> None:
            say(f"handled {event.value} by {service.id}")

    return service
