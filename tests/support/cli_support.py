"""Running ``micro`` as a subprocess against services on loopback (mDNS on 127.0.0.1).

Importing this generates proto/greeter into tests/gen/cli once (the CLI tests'
services and ``--proto-module`` use it), and tests/cli/v2's version 2.0.0 of it into
tests/gen/cli-v2.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
CLI = ROOT / "tests" / "cli"  # the greeter nodes ``micro run`` imports, and v2's proto
GEN = ROOT / "tests" / "gen" / "cli"
GEN_V2 = ROOT / "tests" / "gen" / "cli-v2"
PROTO = ROOT / "proto"
GREETER = Path("greeter") / "v1" / "greeter.proto"
SERVING = re.compile(r"micro run: (\S+) serving on (\S+) as (\S+)")


def _generate(root: Path, gen: Path) -> None:
    """Generate root's greeter into gen unless the output is newer than its proto."""
    source = root / GREETER
    out = gen / GREETER.with_name("greeter_micro.py")
    if out.exists() and out.stat().st_mtime >= source.stat().st_mtime:
        return
    gen.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "micro", "gen", "-I", str(root), "--out", str(gen), str(source)],
        check=True,
        capture_output=True,
    )


_generate(PROTO, GEN)
_generate(CLI / "v2", GEN_V2)


def unique(prefix: str) -> str:
    """A name no other test, run or agent on this loopback uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def environment(**extra: str) -> dict[str, str]:
    """The CLI's environment: mDNS on loopback, the generated greeter importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICRO_")}
    env.update(
        MICRO_REGISTRY="mdns",
        MICRO_MDNS_INTERFACES="127.0.0.1",
        PYTHONPATH=os.pathsep.join([str(GEN), str(CLI)]),
    )
    env.update(extra)
    return env


def micro(
    *args: str, stdin: str | None = None, timeout: float = 20.0, cwd: Path = CLI, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m micro ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "micro", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(**env),
        cwd=cwd,
    )


class Running:
    """A ``micro`` command left running (run, watch, subscribe); its stderr lines
    are read on a thread so the test can wait for one with a deadline."""

    def __init__(self, *args: str, cwd: Path = CLI, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "micro", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(**env),
            cwd=cwd,
        )
        self.errors: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.put(line.rstrip("\n"))

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        """The first stderr line from now on that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no stderr line matched {pattern!r}; saw {self.seen}")
            try:
                line = self.errors.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def stop(self, timeout: float = 15.0) -> tuple[int, str]:
        """SIGTERM, then the exit code and what it wrote on stdout."""
        if self.process.stdout is None or self.process.stdout.closed:
            return self.process.returncode, ""  # finished already
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def finish(self, timeout: float = 15.0) -> tuple[int, str]:
        """Wait for the exit (killing it past ``timeout``): code and stdout."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"{self.process.args!r} did not exit within {timeout} s") from None
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        out = self.process.stdout.read()  # small outputs: the pipe never filled
        self.process.stdout.close()
        self.reader.join(5)  # stderr ends with the process
        self.process.stderr.close()
        return code, out


@dataclass
class Node:
    """A ``micro run`` node the CLI tests call: its name, address, id and process."""

    name: str
    address: str
    id: str
    process: Running
