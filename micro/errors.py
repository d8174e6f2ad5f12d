"""Typed status errors, and the one place grpc's errors are translated to them.

    Error                   root: a gRPC status with code, message and rich details
    ├── Cancelled           CANCELLED
    ├── Unknown             UNKNOWN
    ├── InvalidArgument     INVALID_ARGUMENT
    ├── DeadlineExceeded    DEADLINE_EXCEEDED
    ├── NotFound            NOT_FOUND
    │   └── ServiceNotFound     the registry knows no node to call (raised by the client)
    ├── AlreadyExists       ALREADY_EXISTS
    ├── PermissionDenied    PERMISSION_DENIED
    ├── ResourceExhausted   RESOURCE_EXHAUSTED
    ├── FailedPrecondition  FAILED_PRECONDITION
    ├── Aborted             ABORTED
    ├── OutOfRange          OUT_OF_RANGE
    ├── Unimplemented       UNIMPLEMENTED
    ├── Internal            INTERNAL
    ├── Unavailable         UNAVAILABLE
    ├── DataLoss            DATA_LOSS
    └── Unauthenticated     UNAUTHENTICATED

A handler raises one (``raise NotFound("no user 42")``); the caller catches the same
class. Details are protobuf messages (``google.rpc.error_details_pb2`` or your own),
sent as ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer, the format
every gRPC implementation reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

DETAILS_KEY = "grpc-status-details-bin"
# The trailer of a call a server refused before running it (load shedding, or a
# stopping server): the caller may send it to another node, whether or not it may
# run twice. Its value says why; STOPPING also tells the caller the node is going.
REFUSED_KEY = "micro-refused"
STOPPING = "stopping"

M = TypeVar("M", bound=Message)


Pairs = tuple[tuple[str, str | bytes], ...]


class Error(Exception):
    """A gRPC status as an exception: ``code``, ``message`` and packed ``details``.

    An error a call raised also carries what the server sent besides the status:
    ``initial_metadata`` (response headers) and ``trailing_metadata`` (trailers),
    as (key, value) pairs, repeated keys kept.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        details: Iterable[Message] = (),
        initial_metadata: Pairs = (),
        trailing_metadata: Pairs = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: tuple[any_pb2.Any, ...] = tuple(_pack(d) for d in details)
        self.initial_metadata = initial_metadata
        self.trailing_metadata = trailing_metadata

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def detail(self, kind: type[M]) -> M | None:
        """The first detail of message type ``kind``, unpacked, or None."""
        found = kind()
        for packed in self.details:
            if packed.Unpack(found):
                return found
        return None

    def status_trailers(self) -> tuple[tuple[str, bytes], ...]:
        """The trailers a server sends to carry the details (empty without details)."""
        if not self.details:
            return ()
        status = status_pb2.Status(
            code=self.code.value[0], message=self.message, details=self.details
        )
        return ((DETAILS_KEY, status.SerializeToString()),)


def _pack(message: Message) -> any_pb2.Any:
    if isinstance(message, any_pb2.Any):
        return message
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class Cancelled(Error):
    code = grpc.StatusCode.CANCELLED


class Unknown(Error):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(Error):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(Error):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(Error):
    code = grpc.StatusCode.NOT_FOUND


class ServiceNotFound(NotFound):
    """No registered node of a service matches the call; the message names both.
    Raised out of a handler, it reaches that handler's caller as UNAVAILABLE: a
    dependency is missing, not what the caller called."""


class AlreadyExists(Error):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(Error):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(Error):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(Error):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(Error):
    code = grpc.StatusCode.ABORTED


class OutOfRange(Error):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(Error):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(Error):
    code = grpc.StatusCode.INTERNAL


class Unavailable(Error):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(Error):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(Error):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[Error]] = {
    cls.code: cls for cls in Error.__subclasses__() if cls is not Unknown
}
_BY_CODE[grpc.StatusCode.UNKNOWN] = Unknown


def for_code(
    code: grpc.StatusCode, message: str = "", details: Sequence[any_pb2.Any] = ()
) -> Error:
    """The typed error for a status code: each of the 16 codes other than OK has its
    class (``Unknown`` for anything else)."""
    return _BY_CODE.get(code, Unknown)(message, details=details)


def from_rpc_error(error: grpc.RpcError) -> Error:
    """Translate grpcio's error (sync or aio) to the typed tree, keeping details and
    the metadata the server sent."""
    trailers = pairs(error.trailing_metadata())
    initial = getattr(error, "initial_metadata", None)  # both grpc's errors have it; stubs not
    return _BY_CODE.get(error.code(), Unknown)(
        error.details() or "",
        details=_details(trailers),
        initial_metadata=pairs(initial() if initial is not None else ()),
        trailing_metadata=trailers,
    )


def pairs(metadata: Iterable[Any] | None) -> Pairs:
    """grpc's metadata (sync tuples of ``_Metadatum``, or aio ``Metadata``) as plain
    (key, value) pairs."""
    return tuple((k, v) for k, v in metadata or ())


def _details(trailers: Pairs) -> tuple[any_pb2.Any, ...]:
    for key, value in trailers:
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                return tuple(status_pb2.Status.FromString(value).details)
            except DecodeError:
                return ()
    return ()
