"""Events a service publishes are captured typed and in order, and awaitable; a
message delivered to a subscriber reports what became of it."""

from __future__ import annotations

import asyncio
from typing import Any

import echo_micro
import pytest
from echo_pb2 import EchoReply as Reply
from echo_pb2 import EchoRequest as Req

import micro
from micro.broker import Envelope
from micro.broker.base import REASON_HEADER
from micro.testing import Harness, SyncHarness

TOPIC = "echo.put"


class Publishing(echo_micro.EchoHandler):
    """Publishes each put; its subscriber fails a message as its text says."""

    def __init__(self, put: micro.Publisher[Req]) -> None:
        self.put_events = put
        self.failures: dict[str, int] = {}  # failures each text has had

    async def put(self, request: Req, ctx: micro.Context) -> Reply:
        await self.put_events.publish(request)
        return Reply(text=request.text)

    async def on_put(self, event: Req, ctx: micro.EventContext) -> None:
        """``fail``: every attempt raises; ``flaky``: the first one does."""
        failed = self.failures.get(event.text, 0)
        if event.text == "fail" or (event.text == "flaky" and not failed):
            self.failures[event.text] = failed + 1
            raise RuntimeError(f"{event.text} attempt {ctx.attempt}")


def create_service(**options: Any) -> micro.Service:
    service = micro.Service("echo", **options)
    handler = Publishing(service.publisher(TOPIC, Req))
    service.handle(handler)
    service.subscribe(TOPIC, queue="echo")(handler.on_put)
    return service


async def test_published_events_typed_in_order(micro_harness: Harness) -> None:
    await micro_harness.serve(create_service)
    echo = micro_harness.client(echo_micro.EchoClient, "echo")
    for text in ("a", "b"):
        await echo.put(Req(text=text), metadata={"x-request": text}, timeout=10)
    assert await micro_harness.wait_published(TOPIC, Req, 2) == [Req(text="a"), Req(text="b")]
    assert micro_harness.published("other", Req) == []
    headers = [e.headers["x-request"] for e in micro_harness.broker.published]
    assert headers == ["a", "b"]  # the calls' x- metadata travels with their events


async def test_waiting_for_events_never_published_names_them(micro_harness: Harness) -> None:
    await micro_harness.serve(create_service)
    await micro_harness.client(echo_micro.EchoClient, "echo").put(Req(text="a"), timeout=10)
    with pytest.raises(TimeoutError, match=r"2 message\(s\) on echo.put, 1 published: not within"):
        # The second never comes, however long the wait: a short one fails as a long one.
        await micro_harness.wait_published(TOPIC, Req, 2, timeout=0.1)


async def test_events_of_another_type_are_named(micro_harness: Harness) -> None:
    await micro_harness.serve(create_service)
    await micro_harness.client(echo_micro.EchoClient, "echo").put(Req(text="a"), timeout=10)
    with pytest.raises(TypeError, match=r"is a echo.v1.EchoRequest, not a echo.v1.Echo"):
        micro_harness.published(TOPIC, Reply)


async def test_delivered_and_acked(micro_harness: Harness) -> None:
    await micro_harness.serve(create_service)
    delivery = await micro_harness.deliver(TOPIC, Req(text="ok"))
    assert (delivery.outcome, delivery.attempts, delivery.retried) == ("acked", 1, False)


async def test_retried_then_acked(micro_harness: Harness) -> None:
    await micro_harness.serve(create_service)
    delivery = await micro_harness.deliver(TOPIC, Req(text="flaky"))
    assert (delivery.outcome, delivery.attempts, delivery.retried) == ("acked", 2, True)
    assert delivery.errors == ["RuntimeError: flaky attempt 1"]


async def test_dead_lettered_after_the_last_attempt(micro_harness: Harness) -> None:
    await micro_harness.serve(create_service)
    delivery = await micro_harness.deliver(TOPIC, Req(text="fail"))
    attempts = micro_harness.broker.redelivery.max_attempts
    assert (delivery.outcome, delivery.attempts) == ("dead-lettered", attempts)
    assert delivery.errors[-1] == f"RuntimeError: fail attempt {attempts}"
    [dead] = micro_harness.published(TOPIC + ".dlq", Req)  # published before deliver returns
    assert dead == Req(text="fail")


async def test_a_message_of_the_wrong_type_is_dead_lettered_at_once(
    micro_harness: Harness,
) -> None:
    await micro_harness.serve(create_service)
    delivery = await micro_harness.deliver(TOPIC, Reply(text="not a request"))
    assert (delivery.outcome, delivery.attempts) == ("dead-lettered", 1)
    [dead] = [e for e in micro_harness.broker.published if e.topic == TOPIC + ".dlq"]
    assert dead.headers[REASON_HEADER] == "expected echo.v1.EchoRequest, got echo.v1.EchoReply"


async def test_a_failed_dead_letter_is_dropped(micro_harness: Harness) -> None:
    async def refuse(envelope: Envelope, ctx: micro.EventContext) -> None:
        raise RuntimeError("no")

    def create(**options: Any) -> micro.Service:
        service = micro.Service("dlq", **options)
        service.subscribe(TOPIC + ".dlq")(refuse)
        return service

    await micro_harness.serve(create)
    delivery = await micro_harness.deliver(TOPIC + ".dlq", Req())
    assert delivery.outcome == "dropped"


async def test_deliver_needs_one_receiver(micro_harness: Harness) -> None:
    with pytest.raises(LookupError, match=r"deliver\('echo.put'\) needs exactly one .* has 0"):
        await micro_harness.deliver(TOPIC, Req())
    await micro_harness.serve(create_service)
    await micro_harness.serve(create_service)  # the same queue: still one receiver
    assert (await micro_harness.deliver(TOPIC, Req())).outcome == "acked"


async def test_a_delivery_that_outlasts_its_wait_says_how_far_it_got(
    micro_harness: Harness,
) -> None:
    release = asyncio.Event()

    async def held(event: Req, ctx: micro.EventContext) -> None:
        await release.wait()  # held until the test has seen the wait fail

    def create(**options: Any) -> micro.Service:
        service = micro.Service("held", **options)
        service.subscribe(TOPIC)(held)
        return service

    await micro_harness.serve(create)
    # The handler is held until released, so the wait ends at its timeout however short.
    with pytest.raises(TimeoutError, match=r"so far: \[Delivery\(.*attempts=1.*not within"):
        await micro_harness.deliver(TOPIC, Req(), timeout=0.1)
    release.set()


def test_events_in_a_plain_test(micro_sync_harness: SyncHarness) -> None:
    micro_sync_harness.serve(create_service)
    echo = micro_sync_harness.client(echo_micro.EchoSyncClient, "echo")
    echo.put(Req(text="a"), timeout=10)
    assert micro_sync_harness.wait_published(TOPIC, Req) == [Req(text="a")]
    assert micro_sync_harness.published(TOPIC, Req) == [Req(text="a")]
    delivery = micro_sync_harness.deliver(TOPIC, Req(text="flaky"))
    assert (delivery.outcome, delivery.attempts) == ("acked", 2)
