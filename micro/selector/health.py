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


class NodeHealth:
    """What the selector knows about one node address."""

    __slots__ = ("address", "ejected_until", "ejections", "failures", "inflight", "stopping")

    epoch: ClassVar[int] = 0  # ejections so far, of any node: routes count again when it moves

    def __init__(self, address: str) -> None:
        self.address = address
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
            NodeHealth.epoch += 1
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
