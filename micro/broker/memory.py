"""An in-process broker: for tests, and for services that share one process.

Delivery is at most once across a crash (nothing is stored) and at least once while
the process lives: a handler that raises gets the message again after a backoff, and
after ``max_attempts`` the message goes to ``<topic>.dlq``. No ordering guarantee:
each delivery runs as its own task.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import defaultdict

from micro.broker.base import Envelope, RawHandler
from micro.broker.redelivery import Listener, Redelivery


class MemoryBroker:
    """``Broker`` kept in dicts, on one event loop."""

    def __init__(
        self, *, max_attempts: int = 5, backoff: float = 0.05, max_backoff: float = 2.0
    ) -> None:
        self.redelivery = Redelivery(max_attempts, backoff, max_backoff)
        self._subscriptions: dict[str, list[Listener]] = defaultdict(list)
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}

    async def connect(self) -> None:
        pass

    async def publish(self, envelope: Envelope) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[str | None, list[Listener]] = defaultdict(list)
        for sub in self._subscriptions.get(envelope.topic, ()):
            groups[sub.queue].append(sub)
        for queue, subs in groups.items():
            if queue is None:
                chosen = subs
            else:
                turn = self._turns.setdefault((envelope.topic, queue), itertools.count())
                chosen = [subs[next(turn) % len(subs)]]
            for sub in chosen:
                sub.running.add(loop.create_task(self._deliver(sub, envelope)))

    async def subscribe(
        self, topic: str, handler: RawHandler, queue: str | None = None
    ) -> Listener:
        sub = Listener(topic, handler, queue, self._remove)
        self._subscriptions[topic].append(sub)
        return sub

    async def close(self) -> None:
        subs = [s for group in self._subscriptions.values() for s in group]
        for sub in subs:
            await sub.unsubscribe()

    async def _remove(self, sub: Listener) -> None:
        group = self._subscriptions.get(sub.topic, [])
        if sub in group:
            group.remove(sub)

    async def _deliver(self, sub: Listener, envelope: Envelope) -> None:
        await self.redelivery.run(sub.handler, envelope, self.publish)


_shared: list[MemoryBroker] = []
_shared_lock = threading.Lock()


def shared() -> MemoryBroker:
    """The one broker ``MICRO_BROKER=memory`` means in this process."""
    with _shared_lock:
        if not _shared:
            _shared.append(MemoryBroker())
        return _shared[0]
