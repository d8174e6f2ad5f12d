"""``attempt_timeout``: a hung node costs one attempt, not the whole deadline.

The plan's arithmetic with a fake clock, then real in-process servers where one node
takes calls and never answers, through the async and the blocking stubs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import echo_micro
import echo_pb2
import grpc
import pytest
from runtime_support import Echo

import micro
from micro import errors, selector
from micro.plan import Plan, RetryBudget
from micro.pool import Peer
from micro.registry import MemoryRegistry
from micro.selector import NodeHealth, Route
from micro.selector.health import EJECT_AFTER, EJECTION

Req = echo_pb2.EchoRequest
GET = echo_micro.EchoMethods.get  # NO_SIDE_EFFECTS
PUT = echo_micro.EchoMethods.put  # not idempotent
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)
LIMIT = 0.2  # the attempt timeout of the plan tests (a fake clock), seconds
# Against real servers: a healthy in-process node answers well within ATTEMPT, even
# on a loaded machine, so only the hung one runs out of it; calls get DEADLINE.
ATTEMPT = 0.5
DEADLINE = 10.0


# -- the plan, with a fake clock ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plan(method: object, clock: Clock, deadline: float | None) -> Plan[NodeHealth]:
    nodes = [NodeHealth(f"127.0.0.1:{5000 + i}") for i in range(3)]
    round_robin: selector.StrategyFactory[NodeHealth] = selector.strategy("round_robin")
    route = Route(nodes, round_robin())
    return Plan(route, RetryBudget(), method, deadline, 4, clock, attempt_timeout=LIMIT)  # type: ignore[arg-type]


def test_attempt_gets_the_smaller_of_its_limit_and_the_time_left() -> None:
    clock = Clock()
    p = plan(GET, clock, deadline=clock.now + 0.5)
    assert (p.timeout, p.remaining, p.expires) == (LIMIT, 0.5, clock.now + LIMIT)
    clock.now += LIMIT
    assert p.retry(DEADLINE_EXCEEDED)  # ran out: another node
    clock.now += LIMIT
    assert p.retry(DEADLINE_EXCEEDED)
    assert p.timeout == pytest.approx(0.1)  # what is left of the deadline, not LIMIT
    assert p.expires is None  # so DEADLINE_EXCEEDED now is the call's own: final
    clock.now += 0.1
    assert not p.retry(DEADLINE_EXCEEDED)
    without = plan(GET, clock, deadline=None)
    assert (without.timeout, without.remaining) == (LIMIT, None)


def test_expiry_counts_against_the_node_and_is_retried_only_if_idempotent() -> None:
    clock = Clock()
    p = plan(GET, clock, deadline=clock.now + 5)
    hung = p.node
    clock.now += LIMIT
    assert p.retry(DEADLINE_EXCEEDED)
    assert p.node is not hung
    assert hung.failures == 1
    p = plan(PUT, clock, deadline=clock.now + 5)
    clock.now += LIMIT
    assert not p.retry(DEADLINE_EXCEEDED)  # it may have run: not sent twice
    assert p.node.failures == 1  # but the node still looks hung


def test_an_early_deadline_exceeded_is_an_answer_not_a_hang() -> None:
    clock = Clock()
    p = plan(GET, clock, deadline=clock.now + 5)
    clock.now += LIMIT / 2  # the server said so itself, before the attempt ran out
    assert not p.retry(DEADLINE_EXCEEDED)
    assert p.node.failures == 0


def test_attempt_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"CallOptions.attempt_timeout=0: must be > 0"):
        micro.CallOptions(attempt_timeout=0)
    with pytest.raises(ValueError, match=r"attempt_timeout=-1"):
        micro.Client(MemoryRegistry(), attempt_timeout=-1)
    given = micro.CallOptions(attempt_timeout=1.0)
    assert micro.CallOptions(retries=1).over(given).attempt_timeout == 1.0


# -- real servers: one of them hung ------------------------------------------------


class Hung(Echo):
    """Takes every call and never answers: a stopped process, in-process."""

    async def _answer(self, request: Req, ctx: micro.Context) -> echo_pb2.EchoReply:
        self.received += 1
        await asyncio.get_running_loop().create_future()  # until the call is cancelled
        raise AssertionError("unreachable")

    async def watch(self, request: Req, ctx: micro.Context) -> AsyncIterator[echo_pb2.EchoReply]:
        self.received += 1
        await asyncio.get_running_loop().create_future()
        yield echo_pb2.EchoReply()


class Slow(Echo):
    """A stream whose first reply is quick and whose whole length is not."""

    async def watch(self, request: Req, ctx: micro.Context) -> AsyncIterator[echo_pb2.EchoReply]:
        for i in range(3):
            yield echo_pb2.EchoReply(text=f"{request.text}{i}", node=self.node)
            await asyncio.sleep(ATTEMPT)


Node = Callable[[type[Echo]], Awaitable[tuple[micro.Service, Echo]]]


@pytest.fixture
async def node(registry: MemoryRegistry) -> AsyncIterator[Node]:
    """``await node(Hung)``: a running ``echo`` node with that handler."""
    started: list[micro.Service] = []

    async def start(kind: type[Echo]) -> tuple[micro.Service, Echo]:
        svc = micro.Service("echo", registry=registry, config=CONFIG)
        handler = kind(svc.id)
        svc.handle(handler)
        await svc.start()
        started.append(svc)
        return svc, handler

    yield start
    for svc in started:
        await svc.stop(grace=0)


def hung_first(address: str, tried: list[str] | None = None) -> selector.StrategyFactory[Peer]:
    """Pick the node at ``address`` while the selector offers it, so the first attempt
    of a call goes to the hung node and the retry has to go elsewhere; each attempt's
    node is noted in ``tried`` (what the client sent, where a handler's count of
    arrivals may lag on a loaded machine)."""

    def factory() -> selector.Strategy[Peer]:
        def pick(nodes: Sequence[Peer]) -> Peer:
            node = next((n for n in nodes if n.address == address), nodes[0])
            if tried is not None:
                tried.append(node.address)
            return node

        return pick

    return factory


async def test_hung_node_costs_one_attempt_then_is_ejected(
    registry: MemoryRegistry, node: Node
) -> None:
    (hung, _), (good, _) = await node(Hung), await node(Echo)
    tried: list[str] = []
    async with micro.Client(registry, attempt_timeout=ATTEMPT, config=CONFIG) as client:
        options = micro.CallOptions(strategy=hung_first(hung.address, tried))
        echo = echo_micro.EchoClient("echo", client, options=options)
        for _ in range(EJECT_AFTER):  # each call meets the hang first, while it is offered
            started = time.monotonic()
            assert (await echo.get(Req(), timeout=DEADLINE)).node == good.id
            assert ATTEMPT <= time.monotonic() - started < DEADLINE / 2
            if client._pool.peers[hung.address].ejected_until > time.monotonic():
                break
        assert tried.count(hung.address) == EJECT_AFTER  # expiries in a row: ejected
        assert client._pool.peers[hung.address].ejected_until > time.monotonic()
        assert (await echo.get(Req(), timeout=DEADLINE)).node == good.id
        assert tried.count(hung.address) == EJECT_AFTER  # straight to the good node


async def test_non_idempotent_call_ends_at_its_attempt_timeout(
    registry: MemoryRegistry, node: Node
) -> None:
    (hung, _), (_, good_handler) = await node(Hung), await node(Echo)
    tried: list[str] = []
    async with micro.Client(registry, config=CONFIG) as client:  # per call, this time
        strategy = hung_first(hung.address, tried)
        options = micro.CallOptions(strategy=strategy, attempt_timeout=ATTEMPT)
        echo = echo_micro.EchoClient("echo", client, options=options)
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded):
            await echo.put(Req(), timeout=DEADLINE)
        assert time.monotonic() - started < DEADLINE / 2
        assert tried == [hung.address]  # never sent twice
        assert good_handler.received == 0


async def test_the_overall_deadline_is_final(registry: MemoryRegistry, node: Node) -> None:
    hung = [(await node(Hung))[0] for _ in range(3)]
    tried: list[str] = []
    async with micro.Client(registry, attempt_timeout=ATTEMPT, config=CONFIG) as client:
        options = micro.CallOptions(strategy=hung_first(hung[0].address, tried))
        echo = echo_micro.EchoClient("echo", client, options=options)
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded):
            await echo.get(Req(), timeout=1.5 * ATTEMPT)
        elapsed = time.monotonic() - started
    assert elapsed >= 1.5 * ATTEMPT  # the deadline, not an attempt's limit, ended it
    assert len(tried) == 2  # ATTEMPT, then the half ATTEMPT left: no third
    assert tried[0] == hung[0].address != tried[1]


async def test_early_deadline_exceeded_from_a_server_is_not_retried(
    registry: MemoryRegistry, node: Node
) -> None:
    (svc, handler), _ = await node(Echo), await node(Echo)
    async with micro.Client(registry, attempt_timeout=1.0, config=CONFIG) as client:
        options = micro.CallOptions(strategy=hung_first(svc.address))
        echo = echo_micro.EchoClient("echo", client, options=options)
        with pytest.raises(errors.DeadlineExceeded, match="fails as asked"):
            await echo.get(Req(fail="DEADLINE_EXCEEDED"), timeout=DEADLINE)
        assert handler.received == 1
        assert client._pool.peers[svc.address].failures == 0


async def test_stream_retried_when_no_first_reply_but_not_cut_later(
    registry: MemoryRegistry, node: Node
) -> None:
    (hung, _), (slow, _) = await node(Hung), await node(Slow)
    async with micro.Client(registry, attempt_timeout=ATTEMPT, config=CONFIG) as client:
        options = micro.CallOptions(strategy=hung_first(hung.address))
        echo = echo_micro.EchoClient("echo", client, options=options)
        started = time.monotonic()
        replies = [r async for r in echo.watch(Req(text="w"), timeout=DEADLINE)]
        assert [(r.text, r.node) for r in replies] == [(f"w{i}", slow.id) for i in range(3)]
        assert time.monotonic() - started >= 4 * ATTEMPT  # ATTEMPT lost, then a 3 ATTEMPT stream
        assert client._pool.peers[hung.address].failures == 1


async def test_blocking_stubs_same_policy(registry: MemoryRegistry, node: Node) -> None:
    (hung, _), (slow, _) = await node(Hung), await node(Slow)
    tried: list[str] = []
    options = micro.CallOptions(strategy=hung_first(hung.address, tried))
    unary, stream = (micro.Client(registry, attempt_timeout=ATTEMPT, config=CONFIG) for _ in "12")

    def calls() -> tuple[str, list[tuple[str, str]], float]:
        echo = echo_micro.EchoSyncClient("echo", unary, options=options)
        watcher = echo_micro.EchoSyncClient("echo", stream, options=options)
        try:
            with pytest.raises(errors.DeadlineExceeded):
                echo.put(Req(), timeout=DEADLINE)
            started = time.monotonic()
            got = echo.get(Req(), timeout=DEADLINE).node
            replies = [(r.text, r.node) for r in watcher.watch(Req(text="w"), timeout=DEADLINE)]
            return got, replies, time.monotonic() - started
        finally:
            unary.close_sync()
            stream.close_sync()

    got, replies, elapsed = await asyncio.to_thread(calls)
    assert got == slow.id
    assert replies == [(f"w{i}", slow.id) for i in range(3)]
    assert tried.count(hung.address) == 3  # put, get, watch: each tried there once
    assert 5 * ATTEMPT <= elapsed < 5  # two expiries and a 3 ATTEMPT stream, not a deadline


def test_calls_in_flight_when_a_node_is_ejected_do_not_stretch_its_ejection() -> None:
    """Found by the SIGSTOP chaos scenario: a dozen calls stuck on a hung node
    expire together; the first two eject it, the rest used to double the ejection
    each (5 s became 60 s, long after the node was back)."""
    clock = Clock()
    hung = NodeHealth("127.0.0.1:5000")
    route = Route([hung, NodeHealth("127.0.0.1:5001")], hung_first(hung.address)())  # type: ignore[arg-type]
    plans = [
        Plan(route, RetryBudget(), GET, clock.now + 5, 4, clock, attempt_timeout=LIMIT)
        for _ in range(12)
    ]
    assert {p.node for p in plans} == {hung}
    clock.now += LIMIT
    for p in plans:
        assert p.retry(DEADLINE_EXCEEDED)
    assert hung.ejected_until == clock.now + EJECTION
    clock.now += EJECTION
    assert route.select(clock.now) is hung  # back, and on probation:
    hung.failed(clock.now)
    assert hung.ejected_until == clock.now + 2 * EJECTION  # one more failure re-ejects
