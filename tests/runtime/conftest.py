"""Runtime tests: the Echo service generated once per run, and services to call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
GEN = HERE.parent / "gen" / "runtime"


def _generate() -> None:
    """Generate echo.proto unless the output is newer (collection imports it)."""
    out = GEN / "echo_micro.py"
    if out.exists() and out.stat().st_mtime >= (HERE / "echo.proto").stat().st_mtime:
        return
    GEN.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "micro.cli",
            "gen",
            "-I",
            str(HERE),
            "--out",
            str(GEN),
            str(HERE / "echo.proto"),
        ],
        check=True,
        capture_output=True,
    )


_generate()
sys.path.insert(0, str(GEN))

# Imported after the generated modules are on the path.
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping  # noqa: E402

import pytest  # noqa: E402
from echo_node import Echo  # noqa: E402

import micro  # noqa: E402
from micro.registry import MemoryRegistry  # noqa: E402

Start = Callable[..., Awaitable[tuple[micro.Service, Echo]]]
CONFIG = micro.Config(registry="memory", register_ttl=30.0, register_interval=10.0)


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def cluster(registry: MemoryRegistry) -> AsyncIterator[Start]:
    """``await cluster("echo", version="v1")`` starts one node and returns it with its
    handler; every node is stopped after the test."""
    started: list[micro.Service] = []

    async def start(
        name: str = "echo", *, version: str = "", metadata: Mapping[str, str] | None = None
    ) -> tuple[micro.Service, Echo]:
        svc = micro.Service(
            name, version=version, metadata=metadata, registry=registry, config=CONFIG
        )
        handler = Echo(svc.id, svc.client)
        svc.handle(handler)
        await svc.start()
        started.append(svc)
        return svc, handler

    yield start
    for svc in started:
        await svc.stop(grace=0)


@pytest.fixture
async def client(registry: MemoryRegistry) -> AsyncIterator[micro.Client]:
    c = micro.Client(registry, config=CONFIG)
    yield c
    await c.close()
