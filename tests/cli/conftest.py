"""CLI tests: a greeter node started with ``micro run`` (one per module, a unique
name on the loopback mDNS registry), and the CLI run against it as a subprocess."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cli_support import ROOT, Running, unique


def _multicast_problem() -> str | None:
    """The registry tests' loopback multicast probe (one definition of it)."""
    spec = importlib.util.spec_from_file_location(
        "registry_conftest", ROOT / "tests" / "registry" / "conftest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    problem: str | None = module.loopback_multicast()
    return problem


@pytest.fixture(scope="session")
def multicast() -> None:
    """Skips (a failure in CI: CLI tests are marked ``backend``) without loopback
    multicast, which the mDNS registry needs."""
    problem = _multicast_problem()
    if problem is not None:
        pytest.skip(problem)


@dataclass
class Node:
    name: str
    address: str
    id: str
    process: Running


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
