"""Processes of a chaos scenario: Echo instances (echo_node.py) and the
load generator (load.py), each its own process, killed by PID at the end."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime_support import GEN  # importing it generates echo.proto before any child needs it

HERE = Path(__file__).parent

IDEMPOTENT = ("get", "watch")
Report = dict[str, Any]


@dataclass
class Instance:
    """One Echo instance: its process, address and node id."""

    process: asyncio.subprocess.Process
    address: str
    id: str

    async def held(self, count: int) -> None:
        """Until ``count`` calls are held in its handler (started with ``hold``)."""
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), 30)
            assert line, "the instance exited"
            if json.loads(line).get("held", 0) >= count:
                return

    async def release(self) -> None:
        """Let the calls held in its handler answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"release\n")
        await self.process.stdin.drain()


@dataclass
class Call:
    """One call the load generator made, as it wrote it down."""

    method: str
    start: float
    end: float
    code: str
    tried: list[str]


@dataclass
class Loader:
    """The load generator's process and what it has reported so far."""

    process: asyncio.subprocess.Process
    out: Path
    last: Report = field(default_factory=dict)

    async def until(self, done: Callable[[Report], bool], within: float = 30.0) -> Report:
        """Read progress lines until one satisfies ``done`` (bounded by ``within``)."""
        stdout = self.process.stdout
        assert stdout is not None

        async def read() -> Report:
            while not done(self.last):
                line = await stdout.readline()
                assert line, f"the load generator exited early: {self.last}"
                self.last = json.loads(line)
            return self.last

        return await asyncio.wait_for(read(), within)  # asyncio.timeout needs 3.11

    async def answered(self, node: str, more: int = 1, within: float = 30.0) -> Report:
        """Until ``node`` has answered ``more`` calls beyond what it had answered."""
        target = self.last.get("nodes", {}).get(node, 0) + more
        return await self.until(lambda r: r.get("nodes", {}).get(node, 0) >= target, within)

    async def final(self, within: float = 60.0) -> tuple[Report, list[Call]]:
        report = await self.until(lambda r: bool(r.get("final")), within)
        assert await asyncio.wait_for(self.process.wait(), 10) == 0
        return report, [Call(*c) for c in json.loads(self.out.read_text())]


class Processes:
    """Starts instances and loaders; ``close`` kills whatever still runs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.children: list[asyncio.subprocess.Process] = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GEN), str(HERE)])}

    async def _exec(self, *args: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**self.env, **env},
        )
        self.children.append(process)
        return process

    async def instance(self, name: str, registry: Mapping[str, str], ttl: float = 2.0) -> Instance:
        """An Echo instance registered as ``name`` (for ``ttl`` seconds, renewed every
        quarter) in the registry ``registry`` names (``MICRO_REGISTRY`` /
        ``MICRO_REGISTRY_ADDRESS``). Calls with text HOLD wait in its handler until
        ``Instance.release``."""
        process = await self._exec(
            str(HERE / "echo_node.py"),
            f"--name={name}",
            f"--registry={registry['MICRO_REGISTRY']}",
            f"--ttl={ttl}",
            "--hold",
            env=registry,
        )
        assert process.stdout is not None
        started = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        return Instance(process, started["address"], started["id"])

    async def loader(self, name: str, registry: Mapping[str, str], **options: object) -> Loader:
        """The load generator calling ``name``; ``options`` are its flags
        (``rate=200, count=2000, methods="get,put"``)."""
        out = self.tmp / f"calls-{len(self.children)}.json"
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        process = await self._exec(
            str(HERE / "load.py"), "--service", name, "--out", str(out), *flags, env=registry
        )
        return Loader(process, out)

    async def ports(self, count: int) -> list[str]:
        """Addresses of ``count`` ports one Echo server process listens on."""
        process = await self._exec(str(HERE / "echo_ports.py"), str(count), env={})
        assert process.stdout is not None
        addresses: list[str] = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        return addresses

    async def close(self) -> None:
        for process in self.children:
            if process.returncode is None:
                process.kill()
            await process.wait()
