"""Passive health: a node that keeps failing is ejected for a while.

A killed instance stays in the registry until its TTL runs out; ejection takes it
out of rotation after a couple of failed attempts instead. Ejection doubles each time
the node fails again right after coming back, and resets once it answers.
"""

from __future__ import annotations

import logging
from typing import ClassVar

log = logging.getLogger("micro.selector")

EJECT_AFTER = 2  # consecutive failed attempts
EJECTION = 5.0  # seconds, first time
MAX_EJECTION = 60.0


class Ejections:
    """How many ejections the nodes of one pool (a client's) have had: a route over
    them counts its healthy nodes again when this moves, not on every call."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class NodeHealth:
    """What the selector knows about one node address; ``board`` counts the ejections
    of the pool it belongs to (None: a node on its own)."""

    __slots__ = (
        "address",
        "board",
        "ejected_until",
        "ejections",
        "failures",
        "inflight",
        "stopping",
    )

    # Ejections in this process, for the ejections metric; no route reads it.
    ejected_total: ClassVar[int] = 0

    def __init__(self, address: str, board: Ejections | None = None) -> None:
        self.address = address
        self.board = board
        self.inflight = 0
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.stopping = False  # it said so: its CANCELLED answers mean it is going

    def succeeded(self) -> None:
        self.failures = 0
        self.ejections = 0
        self.stopping = False

    def failed(self, now: float) -> None:
        """Count a failure that says the node itself is unwell (cannot connect,
        UNAVAILABLE); eject it when they pile up."""
        self.failures += 1
        if self.failures >= EJECT_AFTER:
            seconds = min(MAX_EJECTION, EJECTION * 2**self.ejections)
            self.ejected_until = now + seconds
            NodeHealth.ejected_total += 1
            if self.board is not None:
                self.board.count += 1
            log.info("ejected %s for %.0fs after repeated failures", self.address, seconds)
            self.ejections += 1
            self.failures = EJECT_AFTER - 1  # one more failure after it returns re-ejects

    def wrong(self, now: float) -> None:
        """The node is not what the registry says (it does not serve the service):
        eject it at once."""
        self.failures = EJECT_AFTER - 1
        self.failed(now)

    def __repr__(self) -> str:
        return f"NodeHealth({self.address!r}, inflight={self.inflight})"
