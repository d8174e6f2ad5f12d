"""The per-call context a handler receives, and what flows from it to outbound calls.

While a handler runs, its ``Context`` is the current one (a contextvar, so it follows
the call into tasks and worker threads). Calls the handler makes inherit its deadline
and the metadata worth passing on: keys starting with ``x-`` and the W3C trace keys,
nothing else, so ``authorization`` and ``cookie`` stay behind (a credential under an
``x-`` key would travel on: keep credentials out of them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import grpc.aio

from micro.method import Method

PROPAGATED_KEYS = frozenset({"traceparent", "tracestate", "baggage"})

_Pairs = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class Identity:
    """Who called: the token's ``subject`` and ``scopes`` (None and () without a
    verified token) and its ``claims``; ``names``, the DNS names of the client
    certificate the TLS handshake verified (() without one)."""

    subject: str | None = None
    scopes: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    names: tuple[str, ...] = ()

    def with_names(self, names: tuple[str, ...]) -> Identity:
        return replace(self, names=names)


@dataclass(frozen=True)
class Peer:
    """Where the call came from: ``address`` (``127.0.0.1:50312``, ``[::1]:50312``,
    or grpc's own form for other transports). Who it is: ``Context.identity``."""

    address: str

    @classmethod
    def parse(cls, peer: str) -> Peer:
        """From grpc's ``ipv4:127.0.0.1:50312`` / ``ipv6:[::1]:50312`` form."""
        kind, _, address = peer.partition(":")
        return cls(address if kind in ("ipv4", "ipv6") else peer)


class Context:
    """What a handler knows about the call it serves, and what it says back besides
    the reply: method, metadata, deadline, peer, cancellation; response headers,
    trailers and compression.

    ``async def say_hello(self, request, ctx): ctx.metadata.get("x-user")``
    """

    __slots__ = (
        "_cancelled",
        "_grpc",
        "_identity",
        "_initial",
        "_metadata",
        "_on_cancel",
        "_propagated",
        "_trailers",
        "method",
    )

    def __init__(self, grpc_context: grpc.aio.ServicerContext[Any, Any], method: Method[Any, Any]):
        self._grpc = grpc_context
        self._metadata: dict[str, str | bytes] | None = None
        self._propagated: _Pairs | None = None
        self._identity: Identity | None = None
        self._trailers: _Pairs = ()
        self._cancelled = False
        self._on_cancel: list[Callable[[], object]] = []
        # Response headers not sent yet: the server sends them before the first reply
        # (or with the status, when there is none).
        self._initial: _Pairs | None = None
        self.method = method

    @property
    def metadata(self) -> dict[str, str | bytes]:
        """Invocation metadata; for a repeated key, the last value (``metadata_all``
        has them all)."""
        if self._metadata is None:
            self._metadata = dict(self._grpc.invocation_metadata() or ())
        return self._metadata

    def metadata_all(self, key: str) -> list[str | bytes]:
        """Every value the caller sent under ``key``, in order."""
        return [v for k, v in self._grpc.invocation_metadata() or () if k == key]

    @property
    def propagated(self) -> _Pairs:
        """The metadata outbound calls made while serving this call carry along."""
        if self._propagated is None:
            self._propagated = tuple(
                (k, v)
                for k, v in self._grpc.invocation_metadata() or ()
                if k.startswith("x-") or k in PROPAGATED_KEYS
            )
        return self._propagated

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline, None without one."""
        return self._grpc.time_remaining()

    @property
    def peer(self) -> Peer:
        """The caller's address."""
        return Peer.parse(self._grpc.peer())

    @property
    def identity(self) -> Identity:
        """Who called: the verified client certificate's names, and the subject and
        scopes of the caller's token once auth middleware has verified it."""
        if self._identity is None:
            self._identity = Identity(names=_names(self._grpc.auth_context()))
        return self._identity

    @identity.setter
    def identity(self, identity: Identity) -> None:
        self._identity = identity

    @property
    def cancelled(self) -> bool:
        """Whether the call ended before the handler did: the caller cancelled it, its
        deadline passed, or the server stopped. For ``def`` handlers, whose thread
        cannot be interrupted: they check it to give up early. An ``async def``
        handler learns it as ``asyncio.CancelledError`` where it awaits (the flag is
        set once that has left the handler)."""
        return self._cancelled

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (on the server's event loop) when the call is
        cancelled; at once if it already is."""
        if self._cancelled:
            callback()
        else:
            self._on_cancel.append(callback)

    def _cancel(self) -> None:
        """The call was cancelled under the handler (told by the server's adapter)."""
        self._cancelled = True
        callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()

    def set_initial_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        """Response headers, sent before the first reply (or with the status when
        there is none). Keys ending in ``-bin`` carry bytes."""
        self._initial = tuple(metadata)

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        """Response trailers, sent with the status (also when the handler raises)."""
        self._trailers = tuple(metadata)
        self._grpc.set_trailing_metadata(self._trailers)

    @property
    def trailers(self) -> _Pairs:
        """The trailers set so far."""
        return self._trailers

    def set_compression(self, compression: grpc.Compression) -> None:
        """Compress this call's replies (``grpc.Compression.Gzip``), whatever the
        server's default. Before the first reply."""
        self._grpc.set_compression(compression)
        if self._initial is None:
            # grpc.aio applies it only with headers sent explicitly (else a unary
            # reply goes uncompressed): so the server sends them, empty if need be.
            self._initial = ()


def _names(auth_context: Mapping[str, Any]) -> tuple[str, ...]:
    """A TLS peer's verified certificate names from grpc's auth context: its DNS
    subject alternative names, else its common name."""
    names = auth_context.get("x509_subject_alternative_name") or auth_context.get(
        "x509_common_name", ()
    )
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


inbound: ContextVar[Context | None] = ContextVar("micro_inbound", default=None)
"""The context of the call being served here, if any."""


def current() -> Context | None:
    """The context of the inbound call this code runs for, or None outside a handler."""
    return inbound.get()
