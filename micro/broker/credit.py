"""How many messages a JetStream pull subscription asks for, without I/O.

A pull subscription asks the server for no more messages than it has free handlers,
counting those it has asked for and not yet received. ``PullCredit`` keeps that
count: ``micro.broker.nats`` sends the requests it hands out and reports what comes
back (a message, the end of a request, a lost connection).
"""

from __future__ import annotations

import collections

PULL_EXPIRES = 5.0  # seconds a pull request waits on the server for messages


class Pull:
    """One pull request: ``batch`` messages asked for, ``left`` of them still to come,
    until ``expires`` (monotonic seconds)."""

    __slots__ = ("batch", "expires", "left")

    def __init__(self, batch: int, expires: float) -> None:
        self.batch = batch
        self.left = batch
        self.expires = expires

    def __repr__(self) -> str:
        return f"Pull(batch={self.batch}, left={self.left}, expires={self.expires})"


class PullCredit:
    """The open pull requests of one subscription of ``concurrency`` handlers."""

    def __init__(self, concurrency: int, expires: float = PULL_EXPIRES) -> None:
        self.concurrency = concurrency
        self.expires = expires
        self.requested = 0  # messages asked for and not yet received
        self._pulls: collections.deque[Pull] = collections.deque()  # oldest first

    def pull(self, held: int, now: float) -> Pull | None:
        """The request to send while ``held`` messages are being handled: one for
        every free handler; None when none is free, or fewer than half with a request
        still open (a small top-up costs a request of its own)."""
        free = self.concurrency - held - self.requested
        if free <= 0 or (self.requested and free < self.concurrency // 2):
            return None
        pull = Pull(free, now + self.expires)
        self._pulls.append(pull)
        self.requested += free
        return pull

    def forget(self, pull: Pull) -> None:
        """``pull`` brings nothing more: it could not be sent, or it ended."""
        try:
            self._pulls.remove(pull)
        except ValueError:
            return
        self.requested -= pull.left

    def took_one(self) -> None:
        """A message came: the server serves requests in order, so the oldest's."""
        if self._pulls:
            oldest = self._pulls[0]
            oldest.left -= 1
            self.requested -= 1
            if oldest.left <= 0:
                self._pulls.popleft()

    def ended(self) -> None:
        """The server ended the oldest request early: it expired (408), was refused
        (409) or its consumer is gone."""
        if self._pulls:
            self.forget(self._pulls[0])

    def expire(self, now: float, grace: float) -> None:
        """Forget the requests whose end never came ``grace`` seconds after they
        expired (a reconnect drops them without a word)."""
        while self._pulls and self._pulls[0].expires + grace < now:
            self.forget(self._pulls[0])

    def clear(self) -> None:
        """The connection was lost, and every open request with it."""
        self._pulls.clear()
        self.requested = 0
