"""The greeter server the benchmarks call:
``python -m bench.greeter_server [NODE] [--max-calls N] [--wait-ms MS]``.

A plain ``grpc.aio`` server with the generated handler mounted by ``micro.mount``;
with ``--max-calls``, a ``micro.Server`` refusing calls beyond N in progress. With
``--wait-ms``, ``SayHello`` awaits that long first (a handler waiting on I/O).
``SayHello`` answers at once and ``LotsOfReplies`` with ``STREAM_REPLIES`` messages,
so the benchmark measures the call path, not work. Every reply names ``NODE``, which
shows how a client spread its calls over several instances. Binds 127.0.0.1:0 and
prints ``port <n>`` on stdout once serving; stops on SIGTERM or SIGINT (the parent
stops it by PID, or kills it with SIGKILL to measure failover).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc.aio

import micro
from bench import greeter

HOST = "127.0.0.1"
STREAM_REPLIES = 10  # messages per LotsOfReplies call


def handler(generated: greeter.Greeter, node: str, wait_s: float = 0.0) -> micro.Handler:
    reply_type = generated.pb2.HelloReply

    # Imported at run time (examples/gen is not a package mypy sees), hence Any.
    base: Any = generated.micro.GreeterHandler

    class BenchGreeter(base):  # type: ignore[misc]
        async def say_hello(self, request: Any, ctx: micro.Context) -> Any:
            if wait_s:
                await asyncio.sleep(wait_s)
            return reply_type(message=request.name, node=node)

        async def lots_of_replies(self, request: Any, ctx: micro.Context) -> AsyncIterator[Any]:
            reply = reply_type(message=request.name, node=node)
            for _ in range(STREAM_REPLIES):
                yield reply

    result: micro.Handler = BenchGreeter()
    return result


async def serve(node: str, max_calls: int | None, wait_s: float) -> None:
    stop_server: Callable[[float | None], Awaitable[None]]
    if max_calls is None:
        server = grpc.aio.server()
        micro.mount(server, handler(greeter.load(), node, wait_s))
        port = server.add_insecure_port(f"{HOST}:0")
        await server.start()
        stop_server = server.stop
    else:
        capped = micro.Server(f"{HOST}:0", max_calls=max_calls, health=False, reflection=False)
        capped.add(handler(greeter.load(), node, wait_s))
        port = int((await capped.start()).rpartition(":")[2])
        stop_server = capped.stop
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"port {port}", flush=True)
    await stop.wait()
    await stop_server(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.greeter_server")
    parser.add_argument("node", nargs="?", default="bench")
    parser.add_argument("--max-calls", type=int)
    parser.add_argument("--wait-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.node, args.max_calls, args.wait_ms / 1000))
