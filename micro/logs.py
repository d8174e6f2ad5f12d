"""Log lines about what others send, bounded.

A malformed registry entry or an undeliverable message can be repeated by its sender
at will; a line per instance lets anyone flood the log (20,000 garbage envelopes were
20,002 lines). A ``Throttle`` logs the first ``burst`` of a kind in each ``window``
and the rest at DEBUG, and says how many it quieted.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

BURST = 10  # lines of one kind per window at their own level
WINDOW = 60.0  # seconds


class Throttle:
    """One kind of line (``kind``, plural, says what: "malformed entries"), bounded.

    malformed = Throttle(log, "malformed entries")
    malformed.log(logging.WARNING, "skipping malformed entry %s: %s", name, reason)
    """

    def __init__(
        self,
        logger: logging.Logger,
        kind: str,
        *,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.kind = kind
        self.burst = burst
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()  # mDNS logs from zeroconf's thread
        self._ends = -math.inf
        self._logged = 0
        self._quieted = 0

    def log(self, level: int, msg: str, *args: object) -> None:
        with self._lock:
            now = self._clock()
            quieted = 0
            if now >= self._ends:
                quieted, self._quieted = self._quieted, 0
                self._ends, self._logged = now + self.window, 0
            loud = self._logged < self.burst
            if loud:
                self._logged += 1
            else:
                self._quieted += 1
            last = loud and self._logged == self.burst
            left = self._ends - now
        if quieted:
            self.logger.warning("%d more %s were logged at DEBUG only", quieted, self.kind)
        self.logger.log(level if loud else logging.DEBUG, msg, *args)
        if last:
            self.logger.log(level, "further %s are logged at DEBUG for %.0f s", self.kind, left)
