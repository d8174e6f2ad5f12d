"""Greeter server processes: each answers with its own node name; kill -9 kills."""

from __future__ import annotations

import grpc

from bench import greeter
from bench.greeter_server import STREAM_REPLIES
from bench.rpc import raw_multicallable
from bench.servers import greeter_servers


def test_servers_answer_with_their_node_and_die_on_kill() -> None:
    generated = greeter.load()
    request = generated.pb2.HelloRequest(name="x")
    with greeter_servers(2) as servers:
        assert len({s.address for s in servers}) == 2
        for server in servers:
            with grpc.insecure_channel(server.address) as channel:
                reply = raw_multicallable(channel, generated.pb2, "unary")(request, timeout=5)
                replies = list(
                    raw_multicallable(channel, generated.pb2, "stream")(request, timeout=5)
                )
            assert reply.node == server.node
            assert [r.node for r in replies] == [server.node] * STREAM_REPLIES
        servers[0].kill()
        assert servers[0].process.returncode == -9
        assert servers[1].process.poll() is None
    assert servers[1].process.poll() is not None
