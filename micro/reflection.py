"""Message types and methods from a node's server reflection, so ``micro call`` and the
HTTP gateway call any service without its generated code.

Every ``micro.Server`` serves grpc reflection. ``Reflection`` feeds a descriptor pool
from one node; ``method`` turns a method descriptor into the same ``micro.Method``
generated code declares, and ``Dynamic`` calls it through the ordinary client
pipeline (discovery, balancing, retries, deadlines).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from micro import options_pb2
from micro.client import CallOptions, Metadata
from micro.method import Idempotency, Method, StreamStream, StreamUnary, UnaryStream, UnaryUnary
from micro.stub import Stub

REFLECTION_TIMEOUT = 5.0  # seconds for each reflection request
REFLECT_ON = 3  # nodes tried before giving up

T = TypeVar("T")

_KINDS: dict[tuple[bool, bool], type[Method[Any, Any]]] = {
    (False, False): UnaryUnary,
    (False, True): UnaryStream,
    (True, False): StreamUnary,
    (True, True): StreamStream,
}


class ReflectionError(Exception):
    """What a node's reflection says cannot be done: no such service, method or type."""


class Unreachable(ReflectionError):
    """A node's reflection failed (down, too slow, not served): another node may answer."""


Dial = Callable[[str], grpc.Channel]


class Reflection:
    """Descriptors served by the node at ``address``, fetched as they are needed."""

    def __init__(
        self,
        address: str,
        timeout: float = REFLECTION_TIMEOUT,
        dial: Dial = grpc.insecure_channel,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.address = address
        self._channel = dial(address)
        bounded = grpc.intercept_channel(self._channel, _Deadline(timeout, tuple(metadata)))
        self._db = ProtoReflectionDescriptorDatabase(bounded)
        self.pool = DescriptorPool(self._db)

    def services(self) -> list[str]:
        return sorted(self._ask(self._db.get_services, "the list of services"))

    def method(self, name: str) -> MethodDescriptor:
        """``Greeter.SayHello``, ``greeter.v1.Greeter.SayHello`` or
        ``greeter.v1.Greeter/SayHello``: the one method it names."""
        service, _, method = name.replace("/", ".").rpartition(".")
        if not service or not method:
            raise ReflectionError(f"method {name!r}: expected Service.Method")
        served = self.services()
        matches = [s for s in served if s == service or s.endswith("." + service)]
        if not matches:
            raise ReflectionError(
                f"{self.address} serves no service {service!r} (it serves {', '.join(served)})"
            )
        if len(matches) > 1:
            raise ReflectionError(
                f"{service!r} is ambiguous at {self.address}: {', '.join(matches)}"
            )
        desc = self._ask(lambda: self.pool.FindServiceByName(matches[0]), matches[0])
        found: MethodDescriptor | None = desc.methods_by_name.get(method)
        if found is None:
            known = ", ".join(m.name for m in desc.methods)
            raise ReflectionError(
                f"{desc.full_name} at {self.address} has no method {method!r} ({known})"
            )
        return found

    def copy(self, services: Sequence[str]) -> DescriptorPool:
        """A pool of ``services`` and every file they import, that needs this node no
        longer: kept after the node's channel is closed, and never asks it again."""
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

        def add(file: Any) -> None:  # dependencies first, as a pool adds them
            if file.name in files:
                return
            for dependency in file.dependencies:
                add(dependency)
            files[file.name] = descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)

        for name in services:
            add(self._ask(functools.partial(self.pool.FindServiceByName, name), name).file)
        pool = DescriptorPool()
        for proto in files.values():
            pool.Add(proto)
        return pool

    def message(self, full_name: str) -> type[Message]:
        """The class of message type ``full_name``."""
        desc = self._ask(lambda: self.pool.FindMessageTypeByName(full_name), full_name)
        return message_factory.GetMessageClass(desc)

    def _ask(self, fetch: Callable[[], Any], what: str) -> Any:
        try:
            return fetch()
        except KeyError:
            raise ReflectionError(f"{self.address} does not know {what!r}") from None
        except grpc.RpcError as e:
            code = e.code().name if isinstance(e, grpc.Call) else "UNAVAILABLE"
            detail = e.details() if isinstance(e, grpc.Call) else str(e)
            raise Unreachable(f"reflection of {self.address} failed: {code}: {detail}") from None

    def close(self) -> None:
        self._channel.close()


def first_answer(
    addresses: Sequence[str],
    ask: Callable[[Reflection], T],
    timeout: float = REFLECTION_TIMEOUT,
    dial: Dial = grpc.insecure_channel,
    metadata: Sequence[tuple[str, str]] = (),
) -> T:
    """``ask`` of the first of up to ``REFLECT_ON`` nodes that answers: a node that
    died but is still registered must not fail the command while others serve.
    ``dial``: the channel to an address (TLS where the settings say); ``metadata``
    goes with each request (a bearer token where reflection needs one)."""
    failure: Unreachable | None = None
    for address in addresses[:REFLECT_ON]:
        node = Reflection(address, timeout, dial, metadata)
        try:
            return ask(node)
        except Unreachable as e:
            failure = e
        finally:
            node.close()
    assert failure is not None, "no addresses"
    raise failure


def method(desc: MethodDescriptor) -> Method[Any, Any]:
    """The ``micro.Method`` generated code would declare for ``desc``: path, message
    classes, streaming kind, idempotency and micro retry options."""
    # Read the options through this process's own classes, where micro's extension
    # is known, whatever pool the descriptor came from.
    options = descriptor_pb2.MethodOptions.FromString(desc.GetOptions().SerializeToString())
    extra = options.Extensions[options_pb2.method]
    kind = _KINDS[(desc.client_streaming, desc.server_streaming)]
    return kind(
        f"/{desc.containing_service.full_name}/{desc.name}",
        message_factory.GetMessageClass(desc.input_type),
        message_factory.GetMessageClass(desc.output_type),
        idempotency=Idempotency(options.idempotency_level),
        retry_codes=tuple(extra.retry_codes),
        max_attempts=extra.max_attempts,
        timeout=extra.timeout,
    )


class Dynamic(Stub):
    """A stub for methods known only at run time: the generated stubs' drivers."""

    __slots__ = ()

    async def unary(
        self,
        method: Method[Any, Any],
        request: Any,
        timeout: float | None,
        metadata: Metadata,
        options: CallOptions,
    ) -> Message:
        """A unary or client-streaming call (``request`` an async iterator then)."""
        reply: Message = await getattr(self, f"_{method.kind}")(
            method, request, timeout, metadata, options
        )
        return reply

    def streaming(
        self,
        method: Method[Any, Any],
        request: Any,
        timeout: float | None,
        metadata: Metadata,
        options: CallOptions,
    ) -> AsyncIterator[Message]:
        """A server-streaming or bidi call: its replies."""
        replies: AsyncIterator[Message] = getattr(self, f"_{method.kind}")(
            method, request, timeout, metadata, options
        )
        return replies


class _Deadline(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """A timeout on every reflection request: grpc's reflection client sets none, and
    a node that accepts connections but never answers must not hang the CLI. And the
    metadata to send (grpc's reflection client sends none)."""

    def __init__(self, timeout: float, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.timeout = timeout
        self.metadata = metadata or None

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details._replace(timeout=self.timeout, metadata=self.metadata), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        bounded = details._replace(timeout=self.timeout, metadata=self.metadata)
        return continuation(bounded, requests)
