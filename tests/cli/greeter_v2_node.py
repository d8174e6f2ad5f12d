"""Version 2.0.0 of the greeter (tests/cli/v2: the request's fields renumbered), for
``micro run`` with tests/gen/cli-v2 on the path:

CLI_TEST_SERVICE=greeter-1234 micro run greeter_v2_node
"""

from __future__ import annotations

import os

from greeter.v1.greeter_micro import GreeterHandler
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

import micro


class Greeter(GreeterHandler):
    def __init__(self, node: str) -> None:
        self.node = node

    async def say_hello(self, request: HelloRequest, ctx: micro.Context) -> HelloReply:
        if not request.name:
            raise micro.errors.InvalidArgument("name is required")
        return HelloReply(message=f"Hello, {request.name}! x{request.times}", node=self.node)  # type: ignore[attr-defined]  # v2's field; mypy sees v1


def create_service() -> micro.Service:
    service = micro.Service(os.environ["CLI_TEST_SERVICE"], version="2.0.0", grace=2.0)
    service.handle(Greeter(service.id))
    return service
