"""call, stream (every kind), describe, services and health through the CLI as a
subprocess, against a greeter node served by ``micro run``; JSON output parsed."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from cli_support import Node, micro

from micro import reflection

pytestmark = pytest.mark.backend


def lines(text: str) -> list[dict[str, object]]:
    """``--json`` output of a stream: one JSON object per line, nothing else."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def documents(text: str) -> list[object]:
    """Output for people: indented JSON documents, each ending with a line ``}``."""
    return [json.loads(d + "}") for d in text.split("\n}\n") if d.strip()]


def test_call_unary_with_metadata(greeter: Node) -> None:
    done = micro(
        "call", greeter.name, "Greeter.SayHello", '{"name": "Ada"}', "-m", "x-user=bob", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"message": "Hello, Ada! (from bob)", "node": greeter.id}


def test_call_by_full_name_version_and_address(greeter: Node) -> None:
    by_version = micro(
        "call", greeter.name, "greeter.v1.Greeter.SayHello", '{"name": "A"}', "--version", "1.0.0"
    )
    direct = micro(
        "call", "-", "greeter.v1.Greeter/SayHello", '{"name": "B"}', "--address", greeter.address
    )
    assert json.loads(by_version.stdout)["message"] == "Hello, A!"
    assert json.loads(direct.stdout)["message"] == "Hello, B!"


def test_call_reads_the_request_from_stdin(greeter: Node) -> None:
    done = micro("call", greeter.name, "Greeter.SayHello", "-", "--json", stdin='{"name": "C"}')
    assert json.loads(done.stdout)["message"] == "Hello, C!"


def test_call_timeout_on_a_slow_method(greeter: Node) -> None:
    began = time.monotonic()
    done = micro(
        "call", greeter.name, "Greeter.SayHello", '{"name": "A"}', "-m", "x-delay=30",
        "--timeout", "0.5", "--json",
    )  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"micro call: {greeter.name} greeter.v1.Greeter/SayHello: DEADLINE_EXCEEDED"
    )
    assert done.stdout == ""
    assert took < 30  # the deadline ended it: the handler would have taken 30 s


def test_call_retries(greeter: Node) -> None:
    """A node that fails the first two calls for a name: two retries get through,
    none does not."""

    def call(retries: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        name = f"r{retries}-{uuid.uuid4().hex[:6]}"
        request = json.dumps({"name": name})
        flaky = ("-m", "x-fail-first=2", "--retries", retries, "--json")
        return name, micro("call", greeter.name, "Greeter.SayHello", request, *flaky)

    _, none = call("0")
    assert none.returncode == 1
    assert none.stderr.endswith(": UNAVAILABLE: call 1 fails as asked\n")
    name, two = call("2")
    assert two.returncode == 0, two.stderr
    assert json.loads(two.stdout)["message"] == f"Hello, {name}!"


def test_reflection_goes_past_a_dead_node(greeter: Node, unused_port: int) -> None:
    # call, stream and --from share this: a node still registered after it died.
    addresses = [f"127.0.0.1:{unused_port}", greeter.address]
    found = reflection.first_answer(addresses, lambda node: node.message("greeter.v1.HelloRequest"))
    assert found.DESCRIPTOR.full_name == "greeter.v1.HelloRequest"


def test_stream_server_streaming(greeter: Node) -> None:
    done = micro("stream", greeter.name, "Greeter.LotsOfReplies", '{"name": "Ada"}', "--json")
    assert done.returncode == 0, done.stderr
    assert [r["message"] for r in lines(done.stdout)] == ["Hello, Ada!", "Hi, Ada!", "Hey, Ada!"]


def test_stream_without_json_prints_each_reply_indented(greeter: Node) -> None:
    done = micro("stream", greeter.name, "Greeter.LotsOfReplies", '{"name": "Ada"}')
    assert done.returncode == 0, done.stderr
    assert '\n  "message": "Hello, Ada!",\n' in done.stdout  # as micro call prints one
    replies = documents(done.stdout)
    assert replies == [
        {"message": m, "node": greeter.id} for m in ("Hello, Ada!", "Hi, Ada!", "Hey, Ada!")
    ]


def test_stream_client_streaming_from_arguments(greeter: Node) -> None:
    done = micro(
        "stream",
        greeter.name,
        "Greeter.LotsOfGreetings",
        '{"name": "a"}',
        '{"name": "b"}',
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [{"message": "Hello, a and b!", "node": greeter.id}]


def test_stream_client_streaming_from_stdin(greeter: Node) -> None:
    stdin = '{"name": "x"}\n\n{"name": "y"}\n{"name": "z"}\n'
    done = micro("stream", greeter.name, "Greeter.LotsOfGreetings", "--json", stdin=stdin)
    assert [r["message"] for r in lines(done.stdout)] == ["Hello, x and y and z!"]


def test_stream_bidi_json_lines(greeter: Node) -> None:
    stdin = '{"name": "x"}\n{"name": "y"}\n'
    done = micro("stream", greeter.name, "Greeter.Chat", "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert [r["message"] for r in lines(done.stdout)] == ["Hi x", "Hi y"]


def test_describe_json(greeter: Node) -> None:
    done = micro("describe", greeter.name, "--json")
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert record["version"] == "1.0.0"
    assert record["nodes"] == [
        {"id": greeter.id, "address": greeter.address, "metadata": {"protocol": "grpc"}}
    ]
    endpoints = {e["name"]: e for e in record["endpoints"]}
    assert endpoints["greeter.v1.Greeter.SayHello"]["request"] == "greeter.v1.HelloRequest"
    assert endpoints["greeter.v1.Greeter.SayHello"]["response"] == "greeter.v1.HelloReply"
    assert endpoints["greeter.v1.Greeter.Chat"]["metadata"] == {"kind": "stream_stream"}
    assert len(endpoints) == 4


def test_describe_table_names_nodes_and_endpoints(greeter: Node) -> None:
    done = micro("describe", greeter.name)
    assert done.returncode == 0, done.stderr
    assert greeter.id in done.stdout
    assert "greeter.v1.Greeter.LotsOfGreetings" in done.stdout


def test_services_json(greeter: Node) -> None:
    done = micro("services", "--json")
    assert done.returncode == 0, done.stderr
    mine = [s for s in json.loads(done.stdout) if s["name"] == greeter.name]
    assert mine == [{"name": greeter.name, "versions": ["1.0.0"], "nodes": 1}]


def test_health_json(greeter: Node) -> None:
    done = micro("health", greeter.name, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["node"], row["address"], row["status"]) == (greeter.id, greeter.address, "SERVING")
    assert row["ms"] >= 0


def test_health_of_every_service_has_a_row_for_this_node(greeter: Node) -> None:
    done = micro("health", "--json")
    rows = [r for r in json.loads(done.stdout) if r["service"] == greeter.name]
    assert [r["status"] for r in rows] == ["SERVING"]
