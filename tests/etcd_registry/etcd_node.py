"""An Echo service registered in etcd, as its own process (TTL 2 s, refreshed every
0.5 s):

python etcd_node.py --name echo --endpoint 127.0.0.1:2379  # prints {"address", "id"}
"""

from __future__ import annotations

import argparse
import asyncio
import json

import runtime_support  # noqa: F401  (generates echo.proto, puts it on the path)
from echo_node import Echo

import micro
from micro.registry.etcd import EtcdRegistry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="echo")
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()

    async def serve() -> None:
        registry = EtcdRegistry([args.endpoint])
        svc = micro.Service(args.name, registry=registry, register_ttl=2, register_interval=0.5)
        svc.handle(Echo(svc.id, svc.client))
        await svc.start()
        print(json.dumps({"address": svc.address, "id": svc.id}), flush=True)
        await svc.serve()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
