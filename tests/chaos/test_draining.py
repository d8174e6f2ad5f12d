"""A node that stops gracefully while callers still send it calls.

Found by the SIGTERM scenario: a call that reaches a grpc.aio server once its stop
has begun is answered CANCELLED (not UNAVAILABLE), though the caller cancelled
nothing. Here the client's registry keeps listing the stopping node (as a registry
slow to propagate a deregistration would), so many calls land in that window.
"""

from __future__ import annotations

import asyncio
import collections

import echo_micro
import echo_pb2
import pytest
from runtime_support import Echo

import micro
from micro import errors
from micro.registry import MemoryRegistry, Node, Service

CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)
LONG = "long"  # the text of the call that keeps a stopping node draining

pytestmark = pytest.mark.timeout(60)


class Marked(Echo):
    """Echo that says when the long call has reached it."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.long = asyncio.Event()

    async def get(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:
        if request.text == LONG:
            self.long.set()
        return await super().get(request, ctx)


async def test_calls_reaching_a_stopping_node_are_retried_or_unavailable() -> None:
    nodes = [micro.Service("echo", registry=MemoryRegistry(), config=CONFIG) for _ in range(4)]
    handlers = [Marked(svc.id) for svc in nodes]
    for svc, handler in zip(nodes, handlers, strict=True):
        svc.handle(handler)
        await svc.start()
    listing = MemoryRegistry()  # what the client sees: every node, throughout
    for svc in nodes:
        await listing.register(Service("echo", nodes=(Node(svc.id, svc.address),)), ttl=3600)
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    done = asyncio.Event()
    under_way = asyncio.Event()

    async with micro.Client(listing, config=CONFIG) as client:
        echo = echo_micro.EchoClient("echo", client)

        async def load() -> None:
            request = echo_pb2.EchoRequest()
            for i in range(20_000):  # bounded; ends once the nodes have stopped
                if done.is_set():
                    return
                method = ("get", "watch", "put")[i % 3]
                try:
                    if method == "watch":
                        assert len([r async for r in echo.watch(request, timeout=5)]) == 3
                    else:
                        await getattr(echo, method)(request, timeout=5)
                    outcomes[method, "OK"] += 1
                except errors.Error as e:
                    outcomes[method, e.code.name] += 1
                if i == 30:
                    under_way.set()

        workers = [asyncio.ensure_future(load()) for _ in range(16)]
        await asyncio.wait_for(under_way.wait(), 10)
        # One after another, each while calls arrive; a long call keeps the node
        # draining for a while, and must finish.
        for stopping, handler in zip(nodes[:-1], handlers[:-1], strict=True):
            pinned = micro.CallOptions(address=stopping.address)
            request = echo_pb2.EchoRequest(text=LONG, sleep=0.3)
            long = asyncio.ensure_future(echo.get(request, options=pinned))
            await asyncio.wait_for(handler.long.wait(), 10)  # in its handler
            await stopping.stop(grace=5)
            assert (await long).node == stopping.id  # drained, not dropped
        done.set()
        await asyncio.gather(*workers)
    await nodes[-1].stop(grace=0)

    failed = {k: n for k, n in outcomes.items() if k[1] != "OK"}
    assert {k for k in failed if k[0] != "put"} == set(), outcomes  # retried elsewhere
    assert {code for _, code in failed} <= {"UNAVAILABLE"}, outcomes  # never CANCELLED
    print(f"\ncalls while listed nodes stopped: {dict(outcomes)}")
