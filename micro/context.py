"""The per-call context a handler receives."""

from __future__ import annotations

from typing import Any

import grpc.aio

from micro.method import Method


class Context:
    """What a handler knows about the call it serves: method, metadata, deadline, peer.

    ``async def say_hello(self, request, ctx): ctx.metadata.get("x-user")``
    """

    __slots__ = ("_grpc", "_metadata", "method")

    def __init__(self, grpc_context: grpc.aio.ServicerContext[Any, Any], method: Method[Any, Any]):
        self._grpc = grpc_context
        self._metadata: dict[str, str | bytes] | None = None
        self.method = method

    @property
    def metadata(self) -> dict[str, str | bytes]:
        """Invocation metadata; for a repeated key, the last value."""
        if self._metadata is None:
            self._metadata = dict(self._grpc.invocation_metadata() or ())
        return self._metadata

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline, None without one."""
        return self._grpc.time_remaining()

    @property
    def peer(self) -> str:
        return self._grpc.peer()

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self._grpc.set_trailing_metadata(metadata)
