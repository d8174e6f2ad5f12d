"""A greeter service: run several, and clients spread their calls across them.

MICRO_REGISTRY=mdns python examples/greeter_service.py
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "gen"))  # made by `make gen`

from greeter.v1.greeter_micro import GreeterHandler
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

import micro


class Greeter(GreeterHandler):
    def __init__(self, node: str, greeted: micro.Publisher[HelloRequest]) -> None:
        self.node = node
        self.greeted = greeted

    async def say_hello(self, request: HelloRequest, ctx: micro.Context) -> HelloReply:
        if not request.name:
            raise micro.errors.InvalidArgument("name is required")
        await self.greeted.publish(request, headers={"node": self.node})  # an event per greeting
        return HelloReply(message=f"Hello, {request.name}!", node=self.node)

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
            yield HelloReply(message=f"Hello, {request.name}!", node=self.node)


def main() -> None:
    service = micro.Service("greeter", version="1.0.0")
    service.handle(Greeter(service.id, service.publisher("greeting.sent", HelloRequest)))
    service.run()  # registers, serves, and on SIGTERM/SIGINT drains and leaves


if __name__ == "__main__":
    main()
