"""The HTTP side of the gateway benchmark, in a process of its own:
``python -m bench.gateway_server GREETER_ADDRESS``.

Serves, each on its own loopback port (printed as ``ports <gateway> <floor>``):
the gateway (``micro.gateway.Gateway``, types from the greeter's reflection), and the
floor: a plain Starlette endpoint doing the same work by hand (JSON body to a
HelloRequest, the call through micro's client and the generated stub, the reply as
JSON). Both call the greeter through one ``micro.Client`` that finds it by name.
Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import micro
from bench import greeter
from bench.rpc import register
from micro.gateway import Gateway
from micro.gateway.serving import Server, bind
from micro.registry import MemoryRegistry

PATH = "/greeter/Greeter/SayHello"


def floor(client: micro.Client) -> Starlette:
    generated = greeter.load()
    stub: Any = generated.micro.GreeterClient("greeter", client)
    request_type = generated.pb2.HelloRequest

    async def say_hello(request: Request) -> JSONResponse:
        message = json_format.ParseDict(await request.json(), request_type())
        reply = await stub.say_hello(message)
        return JSONResponse(json_format.MessageToDict(reply))

    return Starlette(routes=[Route(PATH, say_hello, methods=["POST"])])


async def serve(address: str) -> None:
    registry = MemoryRegistry()
    await register(registry, "greeter", [address])
    async with micro.Client(registry) as client:
        servers, listeners = [], []
        for app in (Gateway(client), floor(client)):
            listener = bind("127.0.0.1", 0)
            servers.append(Server(app))
            listeners.append(listener)
        serving = [
            asyncio.ensure_future(s.serve(sockets=[sock]))
            for s, sock in zip(servers, listeners, strict=True)
        ]
        await asyncio.gather(*(s.ready.wait() for s in servers))
        ports = " ".join(str(sock.getsockname()[1]) for sock in listeners)
        print(f"ports {ports}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        for s in servers:
            s.stop()
        await asyncio.gather(*serving)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
