"""The Echo service used by runtime tests, in-process or as its own process:

python echo_node.py --name echo --version v1   # prints {"address": …, "id": …}

A request whose text is HOLD waits in its handler until ``release`` is set, so a
test can keep calls running across a stop or a kill for as long as it needs them. A
process started with ``--hold`` prints ``{"held": n}`` as the n-th starts waiting and
sets ``release`` when a line arrives on its stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable

import echo_micro
import echo_pb2
import grpc

import micro
from micro import errors

HOLD = "hold"


class Echo(echo_micro.EchoHandler):
    """Answers with its node id; counts what it received."""

    def __init__(self, node: str = "", client: micro.Client | None = None) -> None:
        self.node = node
        self.client = client
        self.received = 0
        self.unavailable = False  # answer every call with UNAVAILABLE, after receiving it
        self.arrived = asyncio.Condition()
        self.on_arrival: Callable[[int], None] | None = None
        self.release = asyncio.Event()  # lets calls with text HOLD answer
        self.held = 0  # calls with text HOLD that have arrived
        self.on_hold: Callable[[int], None] | None = None

    async def _answer(
        self, request: echo_pb2.EchoRequest, ctx: micro.Context
    ) -> echo_pb2.EchoReply:
        self.received += 1
        if self.on_arrival is not None:
            self.on_arrival(self.received)
        async with self.arrived:
            self.arrived.notify_all()
        if self.unavailable:
            raise errors.Unavailable(f"{self.node} is unavailable as asked")
        if request.hops:
            assert self.client is not None, "hops need a client"
            onward = echo_micro.EchoClient(request.hops[0], self.client)
            return await onward.get(
                echo_pb2.EchoRequest(
                    text=request.text, sleep=request.sleep, hops=request.hops[1:], fail=request.fail
                )
            )
        if request.text == HOLD:
            self.held += 1
            if self.on_hold is not None:
                self.on_hold(self.held)
            await self.release.wait()
        if request.sleep:
            await asyncio.sleep(request.sleep)
        if request.fail:
            raise errors.for_code(grpc.StatusCode[request.fail], f"{self.node} fails as asked")
        remaining = ctx.time_remaining()
        return echo_pb2.EchoReply(
            text=request.text,
            node=self.node,
            remaining=-1 if remaining is None else remaining,
            metadata={k: v for k, v in ctx.metadata.items() if isinstance(v, str)},
        )

    async def wait_received(self, count: int) -> None:
        """Until ``count`` calls have arrived."""
        async with self.arrived:
            await self.arrived.wait_for(lambda: self.received >= count)

    async def get(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:
        return await self._answer(request, ctx)

    async def put(self, request: echo_pb2.EchoRequest, ctx: micro.Context) -> echo_pb2.EchoReply:
        return await self._answer(request, ctx)

    async def watch(
        self, request: echo_pb2.EchoRequest, ctx: micro.Context
    ) -> AsyncIterator[echo_pb2.EchoReply]:
        for i in range(3):
            yield echo_pb2.EchoReply(text=f"{request.text}{i}", node=self.node)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="echo")
    parser.add_argument("--version", default="")
    parser.add_argument("--registry", default="memory")
    parser.add_argument("--report", action="store_true", help="print each call's arrival")
    parser.add_argument("--ttl", type=float, default=2.0, help="registration TTL, seconds")
    parser.add_argument("--hold", action="store_true", help="release held calls on a stdin line")
    args = parser.parse_args()

    async def serve() -> None:
        config = micro.Config.from_env(
            registry=args.registry, register_ttl=args.ttl, register_interval=args.ttl / 4
        )
        svc = micro.Service(args.name, version=args.version, config=config)
        handler = Echo(svc.id, svc.client)
        if args.report:
            handler.on_arrival = lambda n: print(json.dumps({"received": n}), flush=True)
        svc.handle(handler)
        await svc.start()
        if args.hold:
            handler.on_hold = lambda n: print(json.dumps({"held": n}), flush=True)
            loop = asyncio.get_running_loop()

            def release() -> None:  # on a daemon thread: never keeps the process alive
                sys.stdin.readline()
                loop.call_soon_threadsafe(handler.release.set)

            threading.Thread(target=release, daemon=True).start()
        print(json.dumps({"address": svc.address, "id": svc.id}), flush=True)
        await svc.serve()  # until SIGTERM: then the graceful stop under test
        print(json.dumps({"stopped": svc.id}), flush=True)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
