"""Two versions of one service whose messages differ (tests/cli/v2 renumbers the
request's fields): the CLI reads the types from a node of the version the call goes
to, so a request is never encoded with one version's types and sent to the other."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cli_support import CLI, GEN, GEN_V2, Node, Running, micro, unique

pytestmark = pytest.mark.backend


@pytest.fixture(scope="module")
def versions(multicast: None) -> Iterator[tuple[Node, Node]]:
    """Version 1.0.0 (proto/greeter) and 2.0.0 (tests/cli/v2) of one service."""
    name = unique("versions")
    nodes = []
    for module, gen in (("greeter_node", GEN), ("greeter_v2_node", GEN_V2)):
        path = os.pathsep.join([str(gen), str(CLI)])
        running = Running("run", module, CLI_TEST_SERVICE=name, PYTHONPATH=path)
        found = running.wait_for(r"serving on (\S+) as (\S+)")
        nodes.append(Node(name, found[1], found[2], running))
    try:
        yield nodes[0], nodes[1]
    finally:
        codes = [node.process.stop()[0] for node in nodes]
    assert codes == [0, 0]


def reply(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return answer["message"], answer["node"]


def say_hello(node: Node, request: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return micro("call", node.name, "Greeter.SayHello", request, "--json", *flags)


def test_version_picks_the_types(versions: tuple[Node, Node]) -> None:
    v1, v2 = versions
    two = say_hello(v2, '{"name": "Ada", "times": 2}', "--version", "2.0.0")
    assert reply(two) == ("Hello, Ada! x2", v2.id)
    one = say_hello(v1, '{"name": "Ada"}', "--version", "1.0.0")
    assert reply(one) == ("Hello, Ada!", v1.id)
    wrong = say_hello(v1, '{"times": 2}', "--version", "1.0.0")  # a 2.0.0 field
    assert wrong.returncode == 1
    assert "does not fit greeter.v1.HelloRequest" in wrong.stderr


def test_without_version_the_call_stays_on_the_reflected_version(
    versions: tuple[Node, Node],
) -> None:
    """Both versions have a ``name`` field, under different numbers: sent to the
    other version, the name would be lost (INVALID_ARGUMENT: name is required)."""
    v1, v2 = versions
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda _: say_hello(v1, '{"name": "Ada"}'), range(8)))
    answers = [reply(d) for d in done]
    assert set(answers) <= {("Hello, Ada!", v1.id), ("Hello, Ada! x0", v2.id)}
