"""The middleware protocol: begin/end hooks on client calls and attempts, server
handlers, and broker publishes and deliveries.

A hook runs when its thing starts and may return an ``Ending``, run once with the
``Outcome`` when it ends. Begin/end rather than "around" (``async def (…, proceed)``)
so one definition serves async and blocking calls, unary and streaming alike, and so
a chain of hooks is a loop over a tuple built once, not a tower of wrappers.

    class Timing(micro.Middleware):
        def call(self, call: micro.ClientCall) -> micro.Ending:
            began = time.monotonic()
            return lambda outcome: print(call.method, outcome.code, time.monotonic() - began)

Hooks run in the caller's context: a contextvar a hook sets is seen by what runs
inside (the handler, the attempts of a call) until its ending resets it. Hooks begin
in the order given and end in reverse. A ``handle`` hook that raises rejects the call
(a ``micro.errors`` error goes to the caller as its status; anything else is
INTERNAL); a ``call`` or ``attempt`` hook that raises a ``micro.errors`` error fails
the call with it, never retried. An ending that raises is logged and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import grpc

from micro import errors

if TYPE_CHECKING:
    from micro.context import Context
    from micro.registry import Node

log = logging.getLogger("micro.middleware")

OK = grpc.StatusCode.OK
Disposition: TypeAlias = Literal["acked", "retried", "dead-lettered"]


@dataclass(slots=True)
class Outcome:
    """How a thing ended: ``error`` (None on success), its status ``code``, and for
    a broker delivery its ``disposition``."""

    error: BaseException | None = None
    code: grpc.StatusCode = OK
    disposition: Disposition | None = None


Ending: TypeAlias = Callable[[Outcome], None]


@dataclass(slots=True)
class ClientCall:
    """One client call, all its attempts. ``service`` is the name called (the
    registry's), ``method`` the full path ``/pkg.Svc/Method``; ``metadata`` is what
    every attempt sends (a hook may add); ``timeout``: seconds the call may take."""

    service: str
    method: str
    kind: str  # unary_unary, unary_stream, stream_unary or stream_stream
    metadata: list[tuple[str, str | bytes]]
    timeout: float | None


@dataclass(slots=True)
class ClientAttempt:
    """One try of a call on one node. ``number`` counts from 1; ``retry_of`` is the
    status the previous attempt failed with. ``metadata`` is this attempt's own copy
    of the call's (a hook may add to it, a trace context say)."""

    call: ClientCall
    node: Node
    number: int
    retry_of: grpc.StatusCode | None
    metadata: list[tuple[str, str | bytes]]


@dataclass(slots=True)
class ServerCall:
    """One call a server handles: ``service`` is the proto service (``pkg.Svc``: a
    server does not know the name it is registered under), ``method`` the full path;
    ``ctx`` is the ``micro.Context`` its handler gets."""

    service: str
    method: str
    kind: str  # unary_unary, unary_stream, stream_unary or stream_stream
    ctx: Context


@dataclass(slots=True)
class Outgoing:
    """A message being published; ``headers`` go with it (a hook may add)."""

    topic: str
    message: Any
    headers: dict[str, str]


@dataclass(slots=True)
class Incoming:
    """A message being delivered to a subscriber; ``attempt`` counts deliveries."""

    topic: str
    queue: str | None
    message: Any
    headers: Mapping[str, str]
    attempt: int


class Middleware:
    """Base class: override only the hooks you need. A hook runs when its thing
    starts and may return an ``Ending``, run once when it ends."""

    def call(self, call: ClientCall) -> Ending | None:
        """A client call, around all its attempts."""
        return None

    def attempt(self, attempt: ClientAttempt) -> Ending | None:
        """One try of a client call on one node."""
        return None

    def handle(self, call: ServerCall) -> Ending | None:
        """A server call, around its handler; raise a ``micro.errors`` error to reject."""
        return None

    def publish(self, message: Outgoing) -> Ending | None:
        """A broker publish."""
        return None

    def deliver(self, message: Incoming) -> Ending | None:
        """A broker delivery to a subscriber."""
        return None


T = TypeVar("T")
Hook: TypeAlias = Callable[[T], "Ending | None"]
Endings: TypeAlias = list[Ending]


class Chain:
    """The hooks of a list of middleware, per kind, in the order given; only the
    hooks a middleware overrides. Built once per client, server or broker."""

    __slots__ = ("attempt", "call", "deliver", "handle", "middleware", "publish")

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        for m in middleware:
            if not isinstance(m, Middleware):
                raise TypeError(f"middleware {m!r}: subclass micro.Middleware")
        self.middleware = tuple(middleware)
        self.call: tuple[Hook[ClientCall], ...] = _hooks(middleware, "call")
        self.attempt: tuple[Hook[ClientAttempt], ...] = _hooks(middleware, "attempt")
        self.handle: tuple[Hook[ServerCall], ...] = _hooks(middleware, "handle")
        self.publish: tuple[Hook[Outgoing], ...] = _hooks(middleware, "publish")
        self.deliver: tuple[Hook[Incoming], ...] = _hooks(middleware, "deliver")

    def __repr__(self) -> str:
        return f"Chain({', '.join(type(m).__name__ for m in self.middleware)})"


def chain(middleware: Sequence[Middleware] | None) -> Chain | None:
    """The chain of ``middleware``; None for none, which is what callers test."""
    return Chain(middleware) if middleware else None


def _hooks(middleware: Sequence[Middleware], name: str) -> tuple[Any, ...]:
    base = getattr(Middleware, name)
    return tuple(getattr(m, name) for m in middleware if getattr(type(m), name) is not base)


def begin(hooks: Sequence[Hook[T]], thing: T) -> Endings:
    """Run ``hooks`` on ``thing``; their endings, to give to ``end``. If a hook
    raises, those already begun end with its error before it propagates."""
    endings: Endings = []
    for hook in hooks:
        try:
            ending = hook(thing)
        except BaseException as e:
            end(endings, failed(e))
            raise
        if ending is not None:
            endings.append(ending)
    return endings


def end(endings: Endings, outcome: Outcome) -> None:
    """Run ``endings`` in reverse; one that raises is logged, the others still run."""
    for ending in reversed(endings):
        try:
            ending(outcome)
        except Exception:
            log.exception("middleware ending %r failed", ending)


SUCCEEDED = Outcome()


def failed(error: BaseException, disposition: Disposition | None = None) -> Outcome:
    """The outcome of ``error``: its status code (CANCELLED for a cancellation,
    UNKNOWN for an exception that is no status)."""
    return Outcome(error, code_of(error), disposition)


def code_of(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, errors.Error):
        return error.code
    if isinstance(error, grpc.RpcError):
        code: grpc.StatusCode = error.code()
        return code
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
