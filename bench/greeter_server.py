"""The greeter server the benchmarks call:
``python -m bench.greeter_server [NODE] [--max-calls N] [--wait-ms MS] [--secure DIR]
[--noop-middleware] [--reflection]``.

A plain ``grpc.aio`` server with the generated handler mounted by ``micro.mount``;
with ``--max-calls``, a ``micro.Server`` refusing calls beyond N in progress; with
``--secure``, one serving mutual TLS and verifying tokens (``bench.secure``). With
``--wait-ms``, ``SayHello`` awaits that long first (a handler waiting on I/O); with
``--noop-middleware``, the mounted handlers run one middleware that does nothing; with
``--reflection``, a ``micro.Server`` serving reflection (the HTTP gateway reads it).
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
from pathlib import Path
from typing import Any

import grpc.aio

import micro
from bench import greeter
from micro.tls import Tls

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


def secure_server(where: Path) -> micro.Server:
    """A ``micro.Server`` serving mutual TLS with ``where``'s certificates and verifying
    every call's token against ``where/issuer.pem`` (see ``bench.secure``)."""
    from micro.middleware.auth import Auth

    tls = Tls(str(where / "server.pem"), str(where / "server-key.pem"), str(where / "ca.pem"))
    auth = Auth(str(where / "issuer.pem"))
    return micro.Server(f"{HOST}:0", health=False, reflection=False, tls=tls, middleware=[auth])


class Noop(micro.Middleware):
    """Every hook, each returning an ending that does nothing: what the middleware
    seam itself costs."""

    def call(self, call: micro.ClientCall) -> micro.Ending:
        return _ignore

    def attempt(self, attempt: micro.ClientAttempt) -> micro.Ending:
        return _ignore

    def handle(self, call: micro.ServerCall) -> micro.Ending:
        return _ignore

    def publish(self, message: micro.Outgoing) -> micro.Ending:
        return _ignore

    def deliver(self, message: micro.Incoming) -> micro.Ending:
        return _ignore


def _ignore(outcome: micro.Outcome) -> None:
    pass


async def serve(
    node: str,
    max_calls: int | None,
    wait_s: float,
    secure: Path | None,
    noop: bool = False,
    reflection: bool = False,
) -> None:
    stop_server: Callable[[float | None], Awaitable[None]]
    if secure is not None:
        server_ = secure_server(secure)
        server_.add(handler(greeter.load(), node, wait_s))
        port = int((await server_.start()).rpartition(":")[2])
        stop_server = server_.stop
    elif max_calls is None and not reflection:
        server = grpc.aio.server()
        micro.mount(
            server, handler(greeter.load(), node, wait_s), middleware=[Noop()] if noop else []
        )
        port = server.add_insecure_port(f"{HOST}:0")
        await server.start()
        stop_server = server.stop
    else:
        capped = micro.Server(f"{HOST}:0", max_calls=max_calls, health=False, reflection=reflection)
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
    parser.add_argument("--secure", type=Path, metavar="DIR", help="mutual TLS and tokens")
    parser.add_argument("--noop-middleware", action="store_true", help="one middleware, no-op")
    parser.add_argument("--reflection", action="store_true", help="serve grpc reflection")
    args = parser.parse_args()
    asyncio.run(
        serve(
            args.node,
            args.max_calls,
            args.wait_ms / 1000,
            args.secure,
            args.noop_middleware,
            args.reflection,
        )
    )
