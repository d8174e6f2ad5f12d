"""A dependency replaced by a table of canned replies and errors, served under its
name: the handler under test calls it through its real generated client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import echo_micro
import pytest
from echo_pb2 import EchoReply as Reply
from echo_pb2 import EchoRequest as Req
from runtime_support import Echo

import micro
from micro import errors
from micro.testing import Call, Fake, Harness


class TallyMethods:
    """Methods with streamed requests (echo has none), declared as generated code does."""

    tally = micro.StreamUnary("/tally.v1.Tally/Tally", Req, Reply)
    chat = micro.StreamStream("/tally.v1.Tally/Chat", Req, Reply)


class TallyHandler(micro.Handler):
    __service__ = micro.ServiceDescriptor("tally.v1.Tally", TallyMethods)


class TallyClient(micro.Stub):
    async def tally(self, requests: Iterable[Req]) -> Reply:
        return await self._stream_unary(TallyMethods.tally, requests, 10, None, None)

    def chat(self, requests: Iterable[Req]) -> AsyncIterator[Reply]:
        return self._stream_stream(TallyMethods.chat, requests, 10, None, None)


def create_front(**options: Any) -> micro.Service:
    """The service under test: its Echo calls on to the services a request's hops name."""
    service = micro.Service("front", **options)
    service.handle(Echo("front", service.client))
    return service


async def test_the_handler_under_test_gets_canned_replies(micro_harness: Harness) -> None:
    back = Fake(echo_micro.EchoHandler, get=Reply(text="canned", node="fake"))
    await micro_harness.serve("back", back.handler)
    await micro_harness.serve(create_front)
    front = micro_harness.client(echo_micro.EchoClient, "front")
    reply = await front.get(Req(text="hi", hops=["back"]), metadata={"x-user": "ada"}, timeout=10)
    assert (reply.text, reply.node) == ("canned", "fake")
    assert back.requests("get") == [Req(text="hi")]
    [call] = back.calls
    assert (call.method, call.metadata["x-user"]) == ("get", "ada")  # passed on by front


async def test_canned_errors_reach_the_caller_typed(micro_harness: Harness) -> None:
    back = Fake(echo_micro.EchoHandler, get=errors.NotFound("no such echo"))
    await micro_harness.serve("back", back.handler)
    back_client = micro_harness.client(echo_micro.EchoClient, "back")
    with pytest.raises(errors.NotFound, match="no such echo"):
        await back_client.get(Req(text="x"), timeout=10)
    with pytest.raises(errors.NotFound, match="no such echo"):  # every time
        await back_client.get(Req(text="y"), timeout=10)
    with pytest.raises(errors.Unimplemented):  # what the table leaves out
        await back_client.put(Req(), timeout=10)
    assert back.requests("get") == [Req(text="x"), Req(text="y")]


async def test_streamed_replies(micro_harness: Harness) -> None:
    back = Fake(echo_micro.EchoHandler, watch=[Reply(text="a"), Reply(text="b")])
    await micro_harness.serve("back", back.handler)
    stream = micro_harness.client(echo_micro.EchoClient, "back").watch(Req(), timeout=10)
    assert [r.text async for r in stream] == ["a", "b"]
    assert back.calls == [Call("watch", Req(), back.calls[0].metadata)]


async def test_streamed_requests_are_recorded_as_a_list(micro_harness: Harness) -> None:
    tally = Fake(TallyHandler, tally=Reply(text="2"), chat=[Reply(text="x")])
    await micro_harness.serve("tally", tally.handler)
    client = micro_harness.client(TallyClient, "tally")
    assert (await client.tally([Req(text="a"), Req(text="b")])).text == "2"
    assert [r.text async for r in client.chat([Req(text="c")])] == ["x"]
    assert tally.requests("tally") == [[Req(text="a"), Req(text="b")]]
    assert tally.requests("chat") == [[Req(text="c")]]


def test_a_method_the_service_lacks_is_named() -> None:
    with pytest.raises(ValueError, match="EchoHandler has no method 'gets'; its methods: get,"):
        Fake(echo_micro.EchoHandler, gets=Reply())


@pytest.mark.parametrize(
    ("method", "reply", "wanted"),
    [
        ("get", Req(), "a echo.v1.EchoReply"),
        ("watch", Reply(), "a list of echo.v1.EchoReply"),
        ("watch", [Req()], "a list of echo.v1.EchoReply"),
    ],
)
def test_a_reply_of_the_wrong_type_is_named(method: str, reply: object, wanted: str) -> None:
    with pytest.raises(TypeError, match=f"Fake\\(EchoHandler, {method}=...\\): {wanted} or an"):
        Fake(echo_micro.EchoHandler, **{method: reply})  # type: ignore[arg-type]
