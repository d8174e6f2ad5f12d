"""Redelivery for every backend: ack on return, retry with backoff on an exception,
dead-letter after the last attempt or at once for a message that can never be handled.

Attempts count on from ``envelope.attempt``: a backend whose server counts deliveries
(JetStream, Redis claims, quorum queues) builds the envelope with that count, so a
message redelivered after its consumers crashed does not get ``max_attempts`` fresh
attempts, and one delivered more often than that is dead-lettered unhandled.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

from micro.broker.base import (
    DEAD_LETTER_SUFFIX,
    REASON_HEADER,
    Envelope,
    RawHandler,
    Undeliverable,
    dead_letter_topic,
)

log = logging.getLogger("micro.broker")


class Redelivery:
    """``max_attempts`` deliveries at most, ``backoff`` doubling (with jitter) between."""

    def __init__(self, max_attempts: int = 5, backoff: float = 0.05, max_backoff: float = 2.0):
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts}: must be >= 1")
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff

    async def run(
        self,
        handler: RawHandler,
        envelope: Envelope,
        dead_letter: Callable[[Envelope], Awaitable[None]],
    ) -> None:
        """Handle ``envelope``, attempts ``envelope.attempt`` to ``max_attempts``;
        returns once it was handled or dead-lettered (raises only if the dead letter
        could not be published)."""
        first = envelope.attempt
        if first > self.max_attempts:
            reason = (
                f"delivered {first} times, max_attempts={self.max_attempts}: "
                "its consumers died while handling it"
            )
        else:
            reason = await self._attempts(handler, envelope)
            if not reason:
                return
        if envelope.topic.endswith(DEAD_LETTER_SUFFIX):  # no dead letters of dead letters
            log.error("dropping dead letter %s of %s: %s", envelope.id, envelope.topic, reason)
            return
        log.warning("dead-lettering message %s of %s: %s", envelope.id, envelope.topic, reason)
        await dead_letter(
            replace(
                envelope,
                topic=dead_letter_topic(envelope.topic),
                headers={**envelope.headers, REASON_HEADER: reason},
                attempt=1,
            )
        )

    async def _attempts(self, handler: RawHandler, envelope: Envelope) -> str:
        """Why the message could not be handled; empty once it was."""
        attempt = envelope.attempt
        while True:
            try:
                await handler(envelope)
                return ""
            except Undeliverable as e:
                return str(e) or type(e).__name__
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                log.warning(
                    "handler of %s failed on message %s (attempt %d of %d): %s",
                    envelope.topic,
                    envelope.id,
                    attempt,
                    self.max_attempts,
                    reason,
                )
                if attempt >= self.max_attempts:
                    return reason
                cap = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(cap / 2, cap))
                attempt += 1
                envelope = replace(envelope, attempt=attempt)
