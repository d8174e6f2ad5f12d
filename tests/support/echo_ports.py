"""The Echo service on several loopback ports of one server, as its own process:

python echo_ports.py 12   # prints ["127.0.0.1:…", …] and serves until killed

Each port stands in for a node: registry entries under changing ids can point at
them, so the client opens and closes real connections without a process per node.
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc.aio
import runtime_support  # noqa: F401  (generates echo.proto, puts it on the path)
from echo_node import Echo

import micro


async def serve(ports: int) -> None:
    server = grpc.aio.server()
    micro.mount(server, Echo("echo-ports"))
    addresses = [f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}" for _ in range(ports)]
    await server.start()
    print(json.dumps(addresses), flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
