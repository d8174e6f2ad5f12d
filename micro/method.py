"""Method and service descriptors: what generated code tells the runtime.

Generated modules declare one descriptor per method (path, message types, streaming
kind, idempotency, retry options). Clients, servers and the retry policy read them;
nothing about a method is looked up by string at call time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import grpc
from google.protobuf.message import Message

IDEMPOTENT_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class Idempotency(enum.Enum):
    """protobuf's ``idempotency_level`` method option."""

    IDEMPOTENCY_UNKNOWN = 0
    NO_SIDE_EFFECTS = 1
    IDEMPOTENT = 2


@dataclass(eq=False)
class Method(Generic[Req, Resp]):
    """One RPC method. ``name`` is its Python attribute name, set by ``__set_name__``."""

    client_streaming: ClassVar[bool]
    server_streaming: ClassVar[bool]
    kind: ClassVar[str]

    path: str
    request: type[Req]
    response: type[Resp]
    idempotency: Idempotency = Idempotency.IDEMPOTENCY_UNKNOWN
    retry_codes: tuple[str, ...] = ()
    max_attempts: int = 0
    timeout: float = 0.0
    deprecated: bool = False
    name: str = field(init=False, default="")
    retry_on: frozenset[grpc.StatusCode] = field(init=False)
    connect_first: bool = field(init=False)
    serialize: Callable[[Req], bytes] = field(init=False, repr=False)
    deserialize_request: Callable[[bytes], Req] = field(init=False, repr=False)
    deserialize_response: Callable[[bytes], Resp] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            extra = {grpc.StatusCode[code] for code in self.retry_codes}
        except KeyError as e:
            raise ValueError(f"{self.path}: unknown status code {e} in retry_codes") from None
        # Statuses worth another attempt once the server may have run the call.
        self.retry_on = frozenset(extra | (IDEMPOTENT_RETRY if self.idempotent else set()))
        # A call that must not run twice is sent only on a connected channel, so a
        # failure to connect is known not to have reached any handler.
        self.connect_first = self.client_streaming or not self.idempotent
        self.serialize = self.request.SerializeToString
        self.deserialize_request = self.request.FromString
        self.deserialize_response = self.response.FromString

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def idempotent(self) -> bool:
        """Safe to send again after the server may have run it."""
        return self.idempotency is not Idempotency.IDEMPOTENCY_UNKNOWN

    @property
    def service(self) -> str:
        """Full proto service name: ``greeter.v1.Greeter``."""
        return self.path.split("/")[1]


class UnaryUnary(Method[Req, Resp]):
    client_streaming, server_streaming, kind = False, False, "unary_unary"


class UnaryStream(Method[Req, Resp]):
    client_streaming, server_streaming, kind = False, True, "unary_stream"


class StreamUnary(Method[Req, Resp]):
    client_streaming, server_streaming, kind = True, False, "stream_unary"


class StreamStream(Method[Req, Resp]):
    client_streaming, server_streaming, kind = True, True, "stream_stream"


class ServiceDescriptor:
    """A service's full name and its methods, collected from a generated ``…Methods``
    class in declaration order."""

    def __init__(self, name: str, methods: type) -> None:
        self.name = name
        self.methods: tuple[Method[Any, Any], ...] = tuple(
            m for m in vars(methods).values() if isinstance(m, Method)
        )

    def __repr__(self) -> str:
        return f"ServiceDescriptor({self.name!r}, {len(self.methods)} methods)"
