"""The greeter server the benchmarks call: ``python -m bench.greeter_server [NODE]``.

A plain ``grpc.aio`` server with the generated handler mounted by ``micro.mount``.
``SayHello`` answers at once and ``LotsOfReplies`` with ``STREAM_REPLIES`` messages,
so the benchmark measures the call path, not work. Every reply names ``NODE``, which
shows how a client spread its calls over several instances. Binds 127.0.0.1:0 and
prints ``port <n>`` on stdout once serving; stops on SIGTERM or SIGINT (the parent
stops it by PID, or kills it with SIGKILL to measure failover).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

import micro
from bench import greeter

HOST = "127.0.0.1"
STREAM_REPLIES = 10  # messages per LotsOfReplies call


def handler(generated: greeter.Greeter, node: str) -> micro.Handler:
    reply_type = generated.pb2.HelloReply

    # Imported at run time (examples/gen is not a package mypy sees), hence Any.
    base: Any = generated.micro.GreeterHandler

    class BenchGreeter(base):  # type: ignore[misc]
        async def say_hello(self, request: Any, ctx: micro.Context) -> Any:
            return reply_type(message=request.name, node=node)

        async def lots_of_replies(self, request: Any, ctx: micro.Context) -> AsyncIterator[Any]:
            reply = reply_type(message=request.name, node=node)
            for _ in range(STREAM_REPLIES):
                yield reply

    result: micro.Handler = BenchGreeter()
    return result


async def serve(node: str) -> None:
    server = grpc.aio.server()
    micro.mount(server, handler(greeter.load(), node))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"port {port}", flush=True)
    await stop.wait()
    await server.stop(grace=None)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1] if len(sys.argv) > 1 else "bench"))
