"""The greeter of proto/greeter, every streaming kind, for ``micro run`` in CLI tests:

CLI_TEST_SERVICE=greeter-1234 micro run greeter_node   (with tests/gen/cli on the path)

SayHello takes two test controls as request metadata: ``x-delay=SECONDS`` answers
that much later (a slow method), ``x-fail-first=N`` answers UNAVAILABLE to the first
N calls for each name (a flaky node, for retries).
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator

from greeter.v1.greeter_micro import GreeterHandler
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

import micro


class Greeter(GreeterHandler):
    def __init__(self, node: str) -> None:
        self.node = node
        self.calls: collections.Counter[str] = collections.Counter()  # by name

    async def say_hello(self, request: HelloRequest, ctx: micro.Context) -> HelloReply:
        if not request.name:
            raise micro.errors.InvalidArgument("name is required")
        self.calls[request.name] += 1
        if self.calls[request.name] <= int(str(ctx.metadata.get("x-fail-first", 0))):
            raise micro.errors.Unavailable(f"call {self.calls[request.name]} fails as asked")
        await asyncio.sleep(min(float(str(ctx.metadata.get("x-delay", 0))), 60))
        user = ctx.metadata.get("x-user")
        suffix = f" (from {user})" if isinstance(user, str) else ""
        return HelloReply(message=f"Hello, {request.name}!{suffix}", node=self.node)

    async def lots_of_replies(
        self, request: HelloRequest, ctx: micro.Context
    ) -> AsyncIterator[HelloReply]:
        for greeting in ("Hello", "Hi", "Hey"):
            yield HelloReply(message=f"{greeting}, {request.name}!", node=self.node)

    async def lots_of_greetings(
        self, requests: AsyncIterator[HelloRequest], ctx: micro.Context
    ) -> HelloReply:
        names = [r.name async for r in requests]
        return HelloReply(message=f"Hello, {' and '.join(names)}!", node=self.node)

    async def chat(
        self, requests: AsyncIterator[HelloRequest], ctx: micro.Context
    ) -> AsyncIterator[HelloReply]:
        async for request in requests:
            yield HelloReply(message=f"Hi {request.name}", node=self.node)


def create_service() -> micro.Service:
    service = micro.Service(os.environ["CLI_TEST_SERVICE"], version="1.0.0", grace=2.0)
    service.handle(Greeter(service.id))
    return service
