"""publish/subscribe and watch through the CLI on the default grpc broker and the
loopback mDNS registry."""

from __future__ import annotations

import json

import pytest
from cli_support import Node, Running, micro, unique

pytestmark = pytest.mark.backend


def test_publish_then_subscribe_typed_events(greeter: Node) -> None:
    topic = unique("topic")
    subscriber = Running("subscribe", topic, "--count", "2", "--json")
    try:
        subscriber.wait_for(f"subscribed to {topic} at ")
        # A type read from a service's reflection, then a well-known type.
        first = micro(
            "publish", topic, '{"name": "Ada"}', "--type", "greeter.v1.HelloRequest",
            "--from", greeter.name, "-H", "k=v", "--json",
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        second = micro("publish", topic, '"hi"', "--type", "google.protobuf.StringValue", "--json")
        assert second.returncode == 0, second.stderr
        code, out = subscriber.finish()
    finally:
        subscriber.stop()
    assert code == 0
    received = [json.loads(line) for line in out.splitlines()]
    sent = [json.loads(first.stdout)["id"], json.loads(second.stdout)["id"]]
    assert sorted(r["id"] for r in received) == sorted(sent)
    by_type = {r["type"]: r for r in received}
    # The subscriber decodes the greeter type through --proto-module only when asked;
    # without it the body stays undecoded, with the reason.
    assert by_type["google.protobuf.StringValue"]["message"] == "hi"
    assert by_type["greeter.v1.HelloRequest"]["headers"] == {"k": "v"}
    assert "undecoded" in by_type["greeter.v1.HelloRequest"]["message"]


def test_subscribe_with_a_type_from_a_proto_module(multicast: None) -> None:
    topic = unique("topic")
    subscriber = Running(
        "subscribe", topic, "--type", "greeter.v1.HelloRequest",
        "--proto-module", "greeter.v1.greeter_pb2", "--queue", "q", "--count", "1",
    )  # fmt: skip
    try:
        subscriber.wait_for(f"subscribed to {topic} at ")
        published = micro(
            "publish", topic, '{"name": "Bo"}', "--type", "greeter.v1.HelloRequest",
            "--proto-module", "greeter.v1.greeter_pb2", "-H", "k=v", "-H", "a=b", "--json",
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        code, out = subscriber.finish()
    finally:
        subscriber.stop()
    assert code == 0
    # For people: topic, type, id and headers on one line, then the message.
    sent = json.loads(published.stdout)["id"]
    assert out == f'{topic} greeter.v1.HelloRequest {sent} a=b, k=v\n{{\n  "name": "Bo"\n}}\n'


def test_publish_says_when_no_subscriber_was_found(multicast: None) -> None:
    topic = unique("nobody")
    done = micro("publish", topic, '"x"', "--type", "google.protobuf.StringValue", "--json")
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)["id"]
    assert done.stderr.splitlines() == [
        f"no subscriber of {topic} found: message {sent} not delivered "
        "(nor later ones until one subscribes)"
    ]


def test_publish_unknown_type_is_one_line(multicast: None) -> None:
    done = micro("publish", "t", "{}", "--type", "nope.Missing")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "micro publish: unknown message type 'nope.Missing': import its _pb2 module with "
        "--proto-module, or name a service that serves it with --from"
    ]


def test_watch_prints_a_node_joining_and_leaving(multicast: None) -> None:
    name = unique("watched")
    watcher = Running("watch", name, "--count", "2", "--json")
    node = None
    try:
        watcher.wait_for(f"watching {name} in the mdns registry")
        node = Running("run", "greeter_node", CLI_TEST_SERVICE=name)
        found = node.wait_for(r"serving on (\S+) as (\S+)")
        code, _ = node.stop()
        assert code == 0
        code, out = watcher.finish()
    finally:
        watcher.stop()
        if node is not None:
            node.stop()
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["create", "delete"]
    assert {e["nodes"][0]["id"] for e in events} == {found[2]}
    assert events[0]["nodes"][0]["address"] == found[1]


def test_watch_shows_nodes_already_there_apart(greeter: Node) -> None:
    """A node there before the watch is shown as exists, and --count counts only what
    happens afterwards (mDNS reports nodes it finds on a cold start as creates)."""
    watcher = Running("watch", greeter.name, "--count", "1", "--json")
    node = None
    try:
        watcher.wait_for(f"watching {greeter.name} in the mdns registry")
        node = Running("run", "greeter_node", CLI_TEST_SERVICE=greeter.name)
        found = node.wait_for(r"serving on (\S+) as (\S+)")
        code, out = watcher.finish()
    finally:
        watcher.stop()
        if node is not None:
            node.stop()
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["nodes"][0]["id"]) for e in events] == [
        ("exists", greeter.id),
        ("create", found[2]),
    ]


def test_services_hides_micro_entries_unless_all(multicast: None) -> None:
    topic = unique("topic")
    subscriber = Running("subscribe", topic)
    try:
        subscriber.wait_for(f"subscribed to {topic} at ")
        shown = micro("services", "--json")
        every = micro("services", "--all", "--json")
    finally:
        code, _ = subscriber.stop()
    assert code == 0
    assert shown.returncode == every.returncode == 0, shown.stderr + every.stderr
    names = {s["name"] for s in json.loads(shown.stdout)}
    assert not {n for n in names if n.startswith("micro.")}, names
    assert {f"micro.broker.{topic}", "micro.cli"} <= {s["name"] for s in json.loads(every.stdout)}


def test_subscribe_stops_on_sigterm_and_leaves_the_registry(multicast: None) -> None:
    topic = unique("topic")
    subscriber = Running("subscribe", topic)
    try:
        subscriber.wait_for(f"subscribed to {topic} at ")
        listed = micro("describe", f"micro.broker.{topic}", "--json")
    finally:
        code, _ = subscriber.stop()
    assert code == 0
    assert listed.returncode == 0, listed.stderr
    gone = micro("describe", f"micro.broker.{topic}")
    assert gone.returncode == 1
    assert gone.stderr.splitlines() == [
        f"micro describe: service 'micro.broker.{topic}' not found in the "
        "mdns registry on 127.0.0.1"
    ]
