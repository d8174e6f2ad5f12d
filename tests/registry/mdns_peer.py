"""Another process on the same host, for the multi-process mDNS tests.

python mdns_peer.py serve NAME NODE TTL  # registers (and again every TTL/3), prints
                                         # {"ready": …}; then obeys stdin: "deregister",
                                         # "exit" (leaves without deregistering)
python mdns_peer.py find NAME            # a cold lookup; prints {"elapsed": …, "nodes": […]}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from micro.registry import MdnsRegistry, Node, Service


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def serve(name: str, node: str, ttl: float) -> None:
    registry = MdnsRegistry()
    service = Service(name, "1.0", nodes=(Node(node, "127.0.0.1:9", {"peer": "yes"}),))
    await registry.register(service, ttl)

    async def heartbeat() -> None:  # as a Service does: register again before the TTL
        while True:
            await asyncio.sleep(ttl / 3)
            await registry.register(service, ttl)

    beating = asyncio.ensure_future(heartbeat())
    say(ready=node)
    try:
        while True:
            command = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if command == "deregister":
                beating.cancel()
                await registry.deregister(service)
                say(deregistered=node)
            elif command in ("exit", ""):
                return
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await registry.close()


async def find(name: str) -> None:
    began = time.monotonic()
    registry = MdnsRegistry()
    try:
        services = await registry.get_service(name)
        elapsed = time.monotonic() - began
        say(elapsed=elapsed, nodes=[n.id for s in services for n in s.nodes])
    finally:
        await registry.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "serve":
        asyncio.run(serve(args[0], args[1], float(args[2])))
    else:
        asyncio.run(find(args[0]))
