"""Test doubles of a dependency from a table of canned replies and errors.

``Fake(UsersHandler, get_user=GetUserReply(name="Ada"), delete_user=NotFound("no"))``
is a ``UsersHandler`` subclass answering ``get_user`` with that reply and
``delete_user`` with that error; methods left out answer UNIMPLEMENTED, as any
generated handler's do. Served under the dependency's name, it is called by the
handler under test through its real generated client, and records what it was sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from micro.context import Context
from micro.method import Method
from micro.server import Handler

H = TypeVar("H", bound=Handler)

Reply = Message | Exception | Sequence[Message]
"""A reply message; an exception to raise (``micro.errors.NotFound(...)``); for a
method that streams its replies, the list of them."""


@dataclass(frozen=True)
class Call:
    """One call a fake received: its method's name, request (client streams: the list
    of requests) and invocation metadata."""

    method: str
    request: Any
    metadata: dict[str, str | bytes]


class Fake(Generic[H]):
    """A ``handler`` of ``base``'s service with canned answers, and the ``calls`` it got.

    users = Fake(UsersHandler, get_user=GetUserReply(name="Ada"))
    await harness.serve("users", users.handler)
    ...
    assert users.requests("get_user") == [GetUserRequest(id=7)]
    """

    def __init__(self, base: type[H], **replies: Reply) -> None:
        methods = {m.name: m for m in base.__service__.methods}
        self.calls: list[Call] = []
        answers = {}
        for name, reply in replies.items():
            method = methods.get(name)
            if method is None:
                raise ValueError(
                    f"{base.__name__} has no method {name!r}; its methods: {', '.join(methods)}"
                )
            answers[name] = self._answer(method, _checked(base, method, reply))
        self.handler: H = type(f"Fake{base.__name__}", (base,), answers)()

    def requests(self, method: str) -> list[Any]:
        """The requests ``method`` (its Python name) received, in order."""
        return [c.request for c in self.calls if c.method == method]

    def _answer(self, method: Method[Any, Any], reply: Reply) -> Any:
        calls = self.calls

        async def record(request: Any, ctx: Context) -> None:
            if method.client_streaming:
                request = [r async for r in request]
            calls.append(Call(method.name, request, dict(ctx.metadata)))
            if isinstance(reply, Exception):
                raise reply

        if method.server_streaming:

            async def stream(_: Handler, request: Any, ctx: Context) -> AsyncIterator[Message]:
                await record(request, ctx)
                for one in reply:  # type: ignore[union-attr]  # checked: a sequence
                    yield one

            return stream

        async def unary(_: Handler, request: Any, ctx: Context) -> Reply:
            await record(request, ctx)
            return reply

        return unary


def _checked(base: type[Handler], method: Method[Any, Any], reply: Reply) -> Reply:
    """``reply`` if it fits ``method``; else an error saying what would."""
    if isinstance(reply, Exception):
        return reply
    name = method.response.DESCRIPTOR.full_name
    if method.server_streaming:
        fits = isinstance(reply, Sequence) and all(isinstance(r, method.response) for r in reply)
        wanted = f"a list of {name}"
    else:
        fits = isinstance(reply, method.response)
        wanted = f"a {name}"
    if not fits:
        raise TypeError(
            f"Fake({base.__name__}, {method.name}=...): {wanted} or an exception to raise, "
            f"not {type(reply).__name__}"
        )
    return reply
