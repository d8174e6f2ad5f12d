"""A made-up ``micro.Context``, for calling a handler method directly in a unit test.

    greeter = Greeter()
    with micro.testing.context(greeter.say_hello, metadata={"x-user": "ada"}, timeout=5) as ctx:
        reply = await greeter.say_hello(HelloRequest(name="Ada"), ctx)

Inside the block the context is the current one, as while a server runs the handler:
calls and publishes the handler makes inherit its deadline and ``x-*`` metadata.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from micro.context import Context, Identity, inbound
from micro.method import Method
from micro.server import Handler

Pairs = tuple[tuple[str, str | bytes], ...]


class _Call:
    """Stands in for the grpc servicer context a server would give the handler."""

    def __init__(self, metadata: Pairs, deadline: float | None, peer: str) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self._peer = peer

    def invocation_metadata(self) -> Pairs:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}  # no TLS handshake: no certificate names

    def set_trailing_metadata(self, metadata: Pairs) -> None:
        """Nobody receives them in a direct call (``Context.trailers`` shows them)."""

    def set_compression(self, compression: object) -> None:
        """Nothing is sent to compress."""


@contextlib.contextmanager
def context(
    method: Callable[..., Any],
    *,
    metadata: Mapping[str, str | bytes] | None = None,
    timeout: float | None = None,
    peer: str = "ipv4:127.0.0.1:1",
    identity: Identity | None = None,
) -> Iterator[Context]:
    """A ``Context`` for a direct call of ``method`` (a handler's bound method): the
    caller sent ``metadata``, with ``timeout`` seconds of deadline from now (None: no
    deadline), from ``peer`` (grpc's form), as ``identity`` (default: no verified
    token or certificate)."""
    ctx = Context(
        cast(Any, _Call(tuple((metadata or {}).items()), _deadline(timeout), peer)),
        _descriptor(method),
    )
    if identity is not None:
        ctx.identity = identity
    token = inbound.set(ctx)
    try:
        yield ctx
    finally:
        inbound.reset(token)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _descriptor(method: Callable[..., Any]) -> Method[Any, Any]:
    """The descriptor of a handler's bound method, found by its name in its service."""
    handler = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(handler, Handler):
        for m in handler.__service__.methods:
            if m.name == name:
                return m
    raise TypeError(
        f"context() takes a handler's method (handler.say_hello), not {method!r}: "
        "the context says which method it serves"
    )
