"""The per-call context a handler receives, and what flows from it to outbound calls.

While a handler runs, its ``Context`` is the current one (a contextvar, so it follows
the call into tasks and worker threads). Calls the handler makes inherit its deadline
and the metadata worth passing on: keys starting with ``x-`` and the W3C trace keys,
nothing else, so ``authorization`` and ``cookie`` stay behind (a credential under an
``x-`` key would travel on: keep credentials out of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

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


class Context:
    """What a handler knows about the call it serves: method, metadata, deadline, peer.

    ``async def say_hello(self, request, ctx): ctx.metadata.get("x-user")``
    """

    __slots__ = ("_grpc", "_identity", "_metadata", "_propagated", "method")

    def __init__(self, grpc_context: grpc.aio.ServicerContext[Any, Any], method: Method[Any, Any]):
        self._grpc = grpc_context
        self._metadata: dict[str, str | bytes] | None = None
        self._propagated: _Pairs | None = None
        self._identity: Identity | None = None
        self.method = method

    @property
    def metadata(self) -> dict[str, str | bytes]:
        """Invocation metadata; for a repeated key, the last value."""
        if self._metadata is None:
            self._metadata = dict(self._grpc.invocation_metadata() or ())
        return self._metadata

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
    def peer(self) -> str:
        return self._grpc.peer()

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

    def set_trailing_metadata(self, metadata: _Pairs) -> None:
        self._grpc.set_trailing_metadata(metadata)


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
