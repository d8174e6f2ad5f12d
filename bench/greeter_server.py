"""The greeter server the rpc benchmark calls: ``python -m bench.greeter_server``.

A plain ``grpc.aio`` server with the generated handler mounted by ``micro.mount``;
``SayHello`` answers at once, so the benchmark measures the call path, not work.
Binds 127.0.0.1:0 and prints ``port <n>`` on stdout once serving; stops on SIGTERM
or SIGINT (the parent stops it by PID).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc.aio

import micro
from bench import greeter

HOST = "127.0.0.1"


def handler(generated: greeter.Greeter) -> micro.Handler:
    reply_type = generated.pb2.HelloReply

    # Imported at run time (examples/gen is not a package mypy sees), hence Any.
    base: Any = generated.micro.GreeterHandler

    class BenchGreeter(base):  # type: ignore[misc]
        async def say_hello(self, request: Any, ctx: micro.Context) -> Any:
            return reply_type(message=request.name, node="bench")

    result: micro.Handler = BenchGreeter()
    return result


async def serve() -> None:
    server = grpc.aio.server()
    micro.mount(server, handler(greeter.load()))
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
    asyncio.run(serve())
