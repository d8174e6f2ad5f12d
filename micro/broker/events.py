"""Typed events over any broker: publishers and subscribers of proto messages.

A subscriber's message type comes from the annotation of its first parameter; a
payload that is not that type (or not parseable) can never succeed, so it is
dead-lettered at once with a log line naming topic and message id, and the
subscriber keeps consuming.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, get_type_hints

from google.protobuf.message import Message

from micro import codec
from micro.broker.base import (
    DEADLINE_HEADER,
    TYPE_HEADER,
    Broker,
    Envelope,
    RawHandler,
    Undeliverable,
)
from micro.broker.redelivery import unsettled
from micro.context import Context, current
from micro.middleware import Incoming, Middleware, Outcome, Outgoing
from micro.middleware.base import Disposition, Endings, begin, chain, end, failed

M = TypeVar("M", bound=Message)


class EventContext:
    """What a subscriber knows about the message it handles."""

    __slots__ = ("envelope",)

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def topic(self) -> str:
        return self.envelope.topic

    @property
    def headers(self) -> Mapping[str, str]:
        return self.envelope.headers

    @property
    def timestamp(self) -> float:
        """When it was published (epoch seconds)."""
        return self.envelope.timestamp

    @property
    def attempt(self) -> int:
        """1 on first delivery, more on redeliveries."""
        return self.envelope.attempt

    def time_remaining(self) -> float | None:
        """Seconds left of the deadline of the call that published it, if any."""
        deadline = self.envelope.headers.get(DEADLINE_HEADER)
        return None if deadline is None else float(deadline) - time.time()


class Publisher(Generic[M]):
    """Publishes ``kind`` messages on ``topic``: ``await created.publish(UserCreated(...))``.

    Inside a handler, the call's ``x-*`` and trace metadata and its deadline travel
    along in the headers. ``middleware`` hooks each publish (``micro.Middleware``).
    """

    def __init__(
        self,
        broker: Broker,
        topic: str,
        kind: type[M],
        *,
        content_type: str = codec.PROTOBUF,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        if content_type not in codec.CONTENT_TYPES:
            raise ValueError(f"unknown content type {content_type!r}: use {codec.CONTENT_TYPES}")
        self.broker = broker
        self.topic = topic
        self.kind = kind
        self.content_type = content_type
        self._type = kind.DESCRIPTOR.full_name
        self._hooks = chain(middleware)

    async def publish(self, message: M, headers: Mapping[str, str] | None = None) -> str:
        """Publish one message; returns its id."""
        if not isinstance(message, self.kind):
            raise TypeError(f"{self.topic} carries {self._type}, not {type(message).__name__}")
        ctx = current()
        all_headers = {} if ctx is None else _inherited(ctx)
        if headers:
            all_headers.update(headers)
        all_headers[TYPE_HEADER] = self._type
        hooks = self._hooks
        if hooks is None:
            envelope = Envelope(
                self.topic, codec.encode(message, self.content_type), self.content_type, all_headers
            )
            await self.broker.publish(envelope)
            return envelope.id
        endings = begin(hooks.publish, Outgoing(self.topic, message, all_headers))
        try:
            envelope = Envelope(
                self.topic, codec.encode(message, self.content_type), self.content_type, all_headers
            )
            await self.broker.publish(envelope)
        except BaseException as e:
            end(endings, failed(e))
            raise
        end(endings, _SENT)
        return envelope.id


def _inherited(ctx: Context) -> dict[str, str]:
    headers = {k: v for k, v in ctx.propagated if isinstance(v, str)}
    remaining = ctx.time_remaining()
    if remaining is not None:
        headers[DEADLINE_HEADER] = repr(time.time() + remaining)
    return headers


EventHandler = Callable[[Any, EventContext], Awaitable[None] | None]


def message_type(handler: EventHandler) -> type[Message | Envelope]:
    """The proto message class a subscriber's first parameter is annotated with;
    ``Envelope`` asks for messages undecoded (dead letters, say)."""
    try:
        hints = get_type_hints(handler)
    except Exception as e:
        raise TypeError(f"cannot read the annotations of {handler!r}: {e}") from None
    params = [p for p in inspect.signature(handler).parameters if p in hints]
    kind = hints.get(params[0]) if params else None
    if not (isinstance(kind, type) and issubclass(kind, (Message, Envelope))):
        raise TypeError(
            f"annotate the first parameter of {getattr(handler, '__qualname__', handler)} "
            "with the proto message class it handles (or Envelope, for raw messages)"
        )
    return kind


def typed(
    handler: EventHandler, *, queue: str | None = None, middleware: Sequence[Middleware] = ()
) -> RawHandler:
    """The envelope handler that decodes for ``handler`` and calls it (``def``
    handlers in a worker thread); ``middleware`` hooks each delivery to it (of
    ``queue``), and hears from ``Redelivery`` what became of a failed one."""
    kind = message_type(handler)
    hooks = chain(middleware)
    blocking = not inspect.iscoroutinefunction(handler)
    name = "" if kind is Envelope else kind.DESCRIPTOR.full_name  # type: ignore[union-attr]

    async def deliver(envelope: Envelope) -> None:
        message: Message | Envelope = envelope
        if name:
            sent = envelope.headers.get(TYPE_HEADER, name)
            if sent != name:
                raise Undeliverable(f"expected {name}, got {sent}")
            try:
                message = codec.decode(envelope.body, kind, envelope.content_type)  # type: ignore[type-var]
            except codec.CodecError as e:
                raise Undeliverable(str(e)) from None
        if hooks is None:
            await _handled(message, EventContext(envelope))
            return
        incoming = Incoming(envelope.topic, queue, message, envelope.headers, envelope.attempt)
        endings = begin(hooks.deliver, incoming)
        try:
            await _handled(message, EventContext(envelope))
        except Exception as e:
            unsettled.set(functools.partial(_settled, endings, e))
            raise
        except BaseException as e:  # cancelled: the backend delivers it again
            end(endings, failed(e))
            raise
        end(endings, _ACKED)

    def _handled(message: Message | Envelope, ctx: EventContext) -> Awaitable[None] | Any:
        if blocking:
            return asyncio.to_thread(handler, message, ctx)
        return handler(message, ctx)

    return deliver


def _settled(endings: Endings, error: Exception, disposition: Disposition) -> None:
    end(endings, failed(error, disposition))


_SENT = Outcome()
_ACKED = Outcome(disposition="acked")
