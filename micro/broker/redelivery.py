"""Redelivery for brokers that retry in-process (memory, grpc): ack on return, retry
with backoff on an exception, dead-letter after the last attempt or at once for a
message that can never be handled."""

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
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                await handler(replace(envelope, attempt=attempt))
                return
            except Undeliverable as e:
                reason = str(e)
                break
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
                if attempt < self.max_attempts:
                    cap = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                    await asyncio.sleep(random.uniform(cap / 2, cap))
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
