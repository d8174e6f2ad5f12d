"""The greeter through grpclib, the other asyncio gRPC client: a peer to compare with.

Written by hand with grpclib's method objects (what its ``protoc-gen-grpclib_python``
stubs do) rather than generated, so the benchmark needs no extra protoc step.
"""

from __future__ import annotations

from typing import Any

from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod

from bench import greeter


class GrpclibGreeter:
    """SayHello and LotsOfReplies on one grpclib ``Channel`` (one HTTP/2 connection)."""

    def __init__(self, address: str, pb2: Any) -> None:
        host, _, port = address.rpartition(":")
        self.channel = Channel(host, int(port))
        self.say_hello: UnaryUnaryMethod[Any, Any] = UnaryUnaryMethod(
            self.channel, greeter.SAY_HELLO, pb2.HelloRequest, pb2.HelloReply
        )
        # Calling it returns every reply of the stream as a list.
        self.lots_of_replies: UnaryStreamMethod[Any, Any] = UnaryStreamMethod(
            self.channel, greeter.LOTS_OF_REPLIES, pb2.HelloRequest, pb2.HelloReply
        )

    def close(self) -> None:
        self.channel.close()
