"""The retry policy of one call, without I/O.

A ``Plan`` names the node and timeout of the next attempt; the async and sync
clients perform it and report each failure back, and the plan answers whether and
where to try again. What is safe to retry:

- a call that cannot have reached a handler: always. No connection could be made;
  the server refused it before running it (load shedding); or a node the registry
  listed for the method answered UNIMPLEMENTED (it is not the service: ejected);
- a call that may have reached one: only when the method is idempotent
  (``idempotency_level``) and the status is one it retries (``Method.retry_on``);
- an attempt that ran out of its own ``attempt_timeout`` (a hung node): like
  UNAVAILABLE for an idempotent method, never for one that may not run twice;
- never beyond the attempt limit, the deadline, or the retry budget.

Each retry prefers a node this call has not tried; going back to a tried node waits
an exponential backoff with full jitter.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, Generic

import grpc

from micro.method import Method
from micro.selector import Route
from micro.selector.strategy import N

log = logging.getLogger("micro.plan")

BACKOFF = 0.025  # seconds before the first repeat on a tried node; doubles each time
MAX_BACKOFF = 1.0
# grpc rounds deadlines to milliseconds and reads its own clock: an attempt that ends
# DEADLINE_EXCEEDED this close to its attempt timeout ran out of it.
EARLY = 0.005
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
CANCELLED = grpc.StatusCode.CANCELLED


class RetryBudget:
    """Retries may add at most ``ratio`` of the load of first attempts, plus a small
    ``reserve`` so a quiet service can still retry a few calls."""

    __slots__ = ("cap", "ratio", "tokens")

    def __init__(self, ratio: float = 0.2, reserve: float = 10.0) -> None:
        self.ratio = ratio
        self.cap = reserve
        self.tokens = reserve

    def deposit(self) -> None:
        tokens = self.tokens + self.ratio
        self.tokens = tokens if tokens < self.cap else self.cap

    def withdraw(self) -> bool:
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Plan(Generic[N]):
    """Attempts of one call: read ``node``, ``timeout`` and ``delay`` (sleep before
    the attempt), call ``retry`` after a failure and ``succeeded`` after an answer.

    ``timeout`` bounds the attempt: ``min(attempt_timeout, time left)``.
    ``remaining`` is the time left of the whole call (streams run on it, their wait
    for a first reply bounded by ``timeout``). ``expires`` is when the attempt
    timeout runs out, None while the overall deadline is the nearer bound.
    """

    __slots__ = (
        "attempt_timeout",
        "attempts",
        "budget",
        "clock",
        "deadline",
        "delay",
        "expires",
        "max_attempts",
        "method",
        "node",
        "remaining",
        "route",
        "timeout",
        "tried",
    )

    def __init__(
        self,
        route: Route[N],
        budget: RetryBudget,
        method: Method[Any, Any],
        deadline: float | None,
        max_attempts: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        attempt_timeout: float | None = None,
    ) -> None:
        self.route = route
        self.budget = budget
        self.method = method
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.clock = clock
        self.attempt_timeout = attempt_timeout
        self.attempts = 1
        self.tried: list[N] = []
        now = clock()
        self.node = route.select(now)
        self._bound(now)
        self.delay = 0.0
        budget.deposit()

    def _bound(self, start: float) -> None:
        """Set the limits of the attempt that starts at ``start``."""
        self.remaining = None if self.deadline is None else self.deadline - start
        limit = self.attempt_timeout
        if limit is not None and (self.remaining is None or limit < self.remaining):
            self.timeout: float | None = limit
            self.expires: float | None = start + limit
        else:
            self.timeout = self.remaining
            self.expires = None

    def succeeded(self) -> None:
        """The node answered (with any status but UNAVAILABLE): it is healthy."""
        self.node.succeeded()

    def retry(self, code: grpc.StatusCode, sent: bool = True) -> bool:
        """Whether to try again after ``code``; if so ``node``, ``timeout`` and
        ``delay`` now describe the next attempt. ``sent`` is False when the call
        provably never reached a handler (no connection, or refused unrun)."""
        now = self.clock()
        node = self.node
        # A node that says DEADLINE_EXCEEDED early answered; one that ran out is hung.
        expires = self.expires
        expired = code is DEADLINE_EXCEEDED and expires is not None and now >= expires - EARLY
        wrong = code is UNIMPLEMENTED and self.route.discovered
        sent = sent and not wrong
        log.debug(
            "%s attempt %d on %s failed: %s%s",
            self.method.path,
            self.attempts,
            node.address,
            code.name,
            " (attempt timeout)" if expired else "" if sent else " (never ran)",
        )
        if wrong or code is UNAVAILABLE or expired:
            # Once ejected, a node's calls still in flight fail too: they say nothing
            # new, and counting each would stretch one ejection to the longest.
            if now >= node.ejected_until:
                if wrong:
                    node.wrong(now)
                else:
                    node.failed(now)
        elif sent and code is not CANCELLED:  # refused or dropped unrun: busy, not unwell
            node.succeeded()
        if self.attempts >= self.max_attempts:
            return False
        retryable = code in self.method.retry_on or (
            self.method.idempotent and (expired or code is CANCELLED)
        )
        if sent and not retryable:
            return False
        if not self.budget.withdraw():
            return False
        self.tried.append(node)
        node = self.route.select(now, self.tried)
        delay = 0.0
        if node in self.tried:
            cap = min(MAX_BACKOFF, BACKOFF * 2 ** (self.attempts - 1))
            delay = random.uniform(0, cap)
        if self.deadline is not None and now + delay >= self.deadline:
            return False
        self._bound(now + delay)
        self.attempts += 1
        self.node = node
        self.delay = delay
        return True
