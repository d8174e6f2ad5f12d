"""CLI tests: a greeter node started with ``micro run`` (one per module, a unique
name on the loopback mDNS registry), and the CLI run against it as a subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_support import Node, Running, unique
from registry_support import loopback_multicast


@pytest.fixture(scope="session")
def multicast() -> None:
    """Skips (a failure in CI: CLI tests are marked ``backend``) without loopback
    multicast, which the mDNS registry needs."""
    problem = loopback_multicast()
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def greeter(multicast: None) -> Iterator[Node]:
    """``micro run greeter_node`` as ``greeter-<random>``; stopped by SIGTERM after
    the module, which must exit 0."""
    name = unique("greeter")
    running = Running("run", "greeter_node", CLI_TEST_SERVICE=name)
    try:
        found = running.wait_for(r"serving on (\S+) as (\S+)")
        yield Node(name, found[1], found[2], running)
    finally:
        code, _ = running.stop()
    assert code == 0
