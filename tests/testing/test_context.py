"""A handler method called directly with a made-up context: what it reads of the
call, and what its own calls inherit from it."""

from __future__ import annotations

import echo_micro
import echo_pb2
import pytest
from runtime_support import Echo

import micro
from micro.context import Identity, current
from micro.testing import Fake, Harness, context

Req, Reply = echo_pb2.EchoRequest, echo_pb2.EchoReply


async def test_the_handler_reads_metadata_and_deadline() -> None:
    echo = Echo("unit")
    with context(echo.get, metadata={"x-user": "ada"}, timeout=60) as ctx:
        reply = await echo.get(Req(text="hi"), ctx)
    assert (reply.text, reply.node, dict(reply.metadata)) == ("hi", "unit", {"x-user": "ada"})
    assert 0 < reply.remaining <= 60
    assert ctx.method is echo_micro.EchoMethods.get
    assert ctx.peer.address == "127.0.0.1:1"
    assert ctx.identity == Identity()  # nobody verified


async def test_the_handler_sees_who_called() -> None:
    echo = Echo()
    ada = Identity(subject="ada", scopes=("echo.read",))
    with context(echo.get, identity=ada, peer="ipv6:[::1]:5") as ctx:
        assert (ctx.identity, ctx.peer.address) == (ada, "[::1]:5")
        ctx.set_trailing_metadata((("x-took", "1"),))
        assert ctx.trailers == (("x-took", "1"),)


async def test_no_deadline_unless_given() -> None:
    echo = Echo()
    with context(echo.get) as ctx:
        assert (await echo.get(Req(), ctx)).remaining == -1


async def test_current_only_inside_the_block() -> None:
    echo = Echo()
    with context(echo.get) as ctx:
        assert current() is ctx
    assert current() is None


async def test_calls_the_handler_makes_inherit_the_context(micro_harness: Harness) -> None:
    back = Fake(echo_micro.EchoHandler, get=Reply(text="from back"))
    await micro_harness.serve("back", back.handler)
    front = Echo("front", micro_harness.caller)
    with context(front.get, metadata={"x-user": "ada", "authorization": "secret"}) as ctx:
        reply = await front.get(Req(hops=["back"]), ctx)
    assert reply.text == "from back"
    [call] = back.calls
    assert call.metadata["x-user"] == "ada"
    assert "authorization" not in call.metadata  # never passed on


def test_a_plain_function_is_refused() -> None:
    with pytest.raises(TypeError, match=r"context\(\) takes a handler's method"), context(print):
        pass


def test_a_method_of_no_service_is_refused() -> None:
    class NotOne(micro.Handler):
        __service__ = echo_micro.EchoHandler.__service__

        def other(self) -> None: ...

    with pytest.raises(TypeError, match=r"handler\.say_hello"), context(NotOne().other):
        pass
