"""Tokens and rules on real calls: what reaches the caller (typed, never retried),
what the handler learns of its caller, whose token a service's own calls carry, and
the peer broker's delivery endpoint under the same rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import echo_micro
import echo_pb2
import pytest
from runtime_support import Echo
from token_support import Issuer

import micro
from micro import errors
from micro.broker.peer import entry_name
from micro.delivery_micro import DeliveryClient
from micro.delivery_pb2 import Envelope as WireEnvelope
from micro.middleware.auth import Auth
from micro.registry import MemoryRegistry

Req = echo_pb2.EchoRequest
TIMEOUT = 10  # refusals are immediate; the bound only turns a hang into a failure
Start = Callable[..., Awaitable[tuple[micro.Service, Echo]]]


class Caller(Echo):
    """Echo answering with the subject and scopes of its caller (at the last hop)."""

    async def get(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:
        reply = await super().get(request, ctx)
        if not request.hops:
            identity = ctx.identity
            reply.text = f"{identity.subject or ''} {' '.join(identity.scopes)}".strip()
        return reply


class Attempts(micro.Middleware):
    """Counts a client's attempts."""

    def __init__(self) -> None:
        self.count = 0

    def attempt(self, attempt: micro.ClientAttempt) -> None:
        self.count += 1


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path / "issuer")


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def start(registry: MemoryRegistry, issuer: Issuer, tmp_path: Path) -> AsyncIterator[Start]:
    """``await start(name, rules=[...], token=...)``: a node verifying the issuer's
    tokens under ``rules`` (a file, as MICRO_AUTH_RULES), calling with ``token``."""
    started: list[micro.Service] = []

    async def run(
        name: str = "echo",
        *,
        rules: list[dict[str, object]] | None = None,
        token: str | None = None,
        middleware: tuple[micro.Middleware, ...] = (),
    ) -> tuple[micro.Service, Echo]:
        path = None
        if rules is not None:
            path = tmp_path / f"{name}-rules.json"
            path.write_text(json.dumps(rules))
        config = micro.Config(
            registry="memory",
            auth_public_key=str(issuer.key),
            auth_rules=None if path is None else str(path),
            auth_token=token,
        )
        svc = micro.Service(name, registry=registry, config=config, middleware=middleware)
        handler = Caller(svc.id, svc.client)
        svc.handle(handler)
        await svc.start()
        started.append(svc)
        return svc, handler

    yield run
    for svc in started:
        await svc.stop(grace=0)


def client(registry: MemoryRegistry, token: str | None, *more: micro.Middleware) -> micro.Client:
    config = micro.Config(registry="memory", auth_token=token)
    return micro.Client(registry, config=config, middleware=more)


async def test_a_call_without_a_token_is_unauthenticated_and_not_retried(
    start: Start, registry: MemoryRegistry
) -> None:
    for _ in range(3):  # three nodes: a retry would find another
        await start()
    attempts = Attempts()
    async with client(registry, None, attempts) as c:
        with pytest.raises(errors.Unauthenticated, match="a bearer token is required"):
            await echo_micro.EchoClient("echo", c).get(Req(), timeout=TIMEOUT)
    assert attempts.count == 1


async def test_bad_tokens_say_why(start: Start, registry: MemoryRegistry, issuer: Issuer) -> None:
    await start()
    cases = {
        issuer.token(lifetime=-3600): "token expired",
        "not-a-jwt": "invalid token",
        Issuer(issuer.key.parent / "other").token(): "Signature verification failed",
    }
    for token, why in cases.items():
        async with client(registry, token) as c:
            with pytest.raises(errors.Unauthenticated, match=why):
                await echo_micro.EchoClient("echo", c).get(Req(), timeout=TIMEOUT)


async def test_wrong_audience(registry: MemoryRegistry, issuer: Issuer) -> None:
    config = micro.Config(
        registry="memory", auth_public_key=str(issuer.key), auth_audience="orders"
    )
    svc = micro.Service("echo", registry=registry, config=config)
    svc.handle(Caller(svc.id))
    await svc.start()
    try:
        async with client(registry, issuer.token(aud="billing")) as c:
            with pytest.raises(errors.Unauthenticated, match="not for audience 'orders'"):
                await echo_micro.EchoClient("echo", c).get(Req(), timeout=TIMEOUT)
        async with client(registry, issuer.token(aud="orders")) as c:
            reply = await echo_micro.EchoClient("echo", c).get(Req(), timeout=TIMEOUT)
        assert reply.text == "alice"
    finally:
        await svc.stop(grace=0)


async def test_rules_by_scope(start: Start, registry: MemoryRegistry, issuer: Issuer) -> None:
    rules = [
        {"resource": "echo.v1.Echo/Get", "scope": "public"},
        {"resource": "echo.v1.Echo/Put", "scope": "echo:write"},
        {"resource": "echo.v1.Echo/*", "scope": "suspended", "access": "deny", "priority": 9},
    ]
    await start(rules=rules)
    async with client(registry, None) as anyone:
        assert (await echo_micro.EchoClient("echo", anyone).get(Req(), timeout=TIMEOUT)).text == ""
        with pytest.raises(errors.Unauthenticated):
            await echo_micro.EchoClient("echo", anyone).put(Req(), timeout=TIMEOUT)
    attempts = Attempts()
    async with client(registry, issuer.token(scopes="echo:read"), attempts) as reader:
        with pytest.raises(errors.PermissionDenied, match="alice may not call it"):
            await echo_micro.EchoClient("echo", reader).put(Req(), timeout=TIMEOUT)
    assert attempts.count == 1  # never retried
    async with client(registry, issuer.token("bob", scopes="echo:read echo:write")) as writer:
        assert (await echo_micro.EchoClient("echo", writer).get(Req(), timeout=TIMEOUT)).text == (
            "bob echo:read echo:write"  # a public method still learns who called
        )
        await echo_micro.EchoClient("echo", writer).put(Req(), timeout=TIMEOUT)
    suspended = issuer.token("eve", scopes="echo:write suspended")  # the deny rule comes first
    async with client(registry, suspended) as denied:
        with pytest.raises(errors.PermissionDenied, match="eve may not call it"):
            await echo_micro.EchoClient("echo", denied).put(Req(), timeout=TIMEOUT)


async def test_a_service_calls_with_its_own_token(
    start: Start, registry: MemoryRegistry, issuer: Issuer
) -> None:
    await start("back")
    await start("front", token=issuer.token("front-service"))
    async with client(registry, issuer.token("alice")) as c:
        reply = await echo_micro.EchoClient("front", c).get(Req(hops=["back"]), timeout=TIMEOUT)
    assert reply.text == "front-service"  # never alice's token, passed on


async def test_a_forward_rule_passes_the_callers_token_on(
    start: Start, registry: MemoryRegistry, issuer: Issuer
) -> None:
    await start("back")
    forwarding = Auth(token=issuer.token("front-service"), forward=["back"])
    await start("front", middleware=(forwarding,))
    async with client(registry, issuer.token("alice")) as c:
        reply = await echo_micro.EchoClient("front", c).get(Req(hops=["back"]), timeout=TIMEOUT)
    assert reply.text == "alice"


async def test_an_injected_event_without_a_token_is_refused(
    registry: MemoryRegistry, issuer: Issuer
) -> None:
    """The peer broker's delivery endpoint is a method like any: a raw client that
    found it in the registry cannot inject an event; a publisher with a token can."""
    config = micro.Config(
        registry="memory",
        auth_public_key=str(issuer.key),
        auth_token=issuer.token("orders-service"),
    )
    svc = micro.Service("orders", registry=registry, config=config)
    received: asyncio.Queue[echo_pb2.EchoRequest] = asyncio.Queue()

    @svc.subscribe("orders.placed")
    async def placed(event: echo_pb2.EchoRequest, ctx: micro.EventContext) -> None:
        received.put_nowait(event)

    await svc.start()
    try:
        (entry,) = await registry.get_service(entry_name("orders.placed"))
        address = entry.nodes[0].address
        forged = WireEnvelope(topic="orders.placed", headers={"x-user": "admin"})
        async with micro.Client(registry, config=micro.Config(registry="memory")) as raw:
            delivery = DeliveryClient(entry_name("orders.placed"), raw)
            with pytest.raises(errors.Unauthenticated):
                await delivery.deliver(
                    forged, timeout=TIMEOUT, options=micro.CallOptions(address=address)
                )
        await svc.publisher("orders.placed", echo_pb2.EchoRequest).publish(Req(text="real"))
        assert (await asyncio.wait_for(received.get(), TIMEOUT)).text == "real"
        assert received.empty()
    finally:
        await svc.stop(grace=0)


async def test_a_token_provider_is_asked_on_every_call(
    start: Start, registry: MemoryRegistry, issuer: Issuer
) -> None:
    """A callable token source (one that refreshes): each call sends what it returns."""
    await start()
    subjects = iter(["first", "second"])

    def current() -> str:
        return issuer.token(next(subjects))

    config = micro.Config(registry="memory")
    async with micro.Client(registry, config=config, middleware=[Auth(token=current)]) as c:
        echo = echo_micro.EchoClient("echo", c)
        assert [(await echo.get(Req(), timeout=TIMEOUT)).text for _ in range(2)] == [
            "first",
            "second",
        ]
