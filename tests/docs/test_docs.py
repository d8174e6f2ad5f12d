"""The README and docs/ run as written, so they cannot drift from the code.

Every fenced block carries a mark on the line above it saying what it is:

    <!-- doc: file PATH -->       write the block to PATH
    <!-- doc: run -->             run it as a bash script (set -e; a cd carries over)
    <!-- doc: console -->         run each `$ command`, compare its output with the
                                  lines under it (ports, node ids and decimals
                                  normalised, runs of spaces as one; `...` stands
                                  for any lines)
    <!-- doc: start PATTERN -->   start its command in the background, wait for
                                  PATTERN in its output; stopped (SIGTERM) at the end
    <!-- doc: skip REASON -->     not run, and why

A document runs from its first block to its last in a fresh directory outside the
repository, against a private etcd registry (the MICRO_* variables, so no other
process on this machine's loopback mDNS can answer), with this installation's
`micro`, `python`, `protoc-gen-micro` and `buf` on PATH. Every Python file a document
writes must then pass `mypy --strict`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from etcd_support import EtcdServer, running

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = ("file", "run", "console", "start", "skip")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
MARK = re.compile(r"<!-- doc: (\w+)(?: (.*?))? -->")
STEP = 600  # seconds one block may take: `make test` may build a virtualenv
START = 120  # seconds a started service may take to say it serves (make run: gen first)


@dataclass(frozen=True)
class Block:
    where: str  # file:line, for messages
    kind: str
    arg: str
    text: str


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for fence in FENCE.finditer(text):
        line = text.count("\n", 0, fence.start()) + 1
        where = f"{path.name}:{line}"
        above = text[: fence.start()].rstrip("\n").rpartition("\n")[2]
        mark = MARK.fullmatch(above.strip())
        assert mark, f"{where}: a ``` block without a <!-- doc: KIND … --> mark above it"
        kind, arg = mark[1], mark[2] or ""
        assert kind in KINDS, f"{where}: unknown mark {kind!r} (known: {', '.join(KINDS)})"
        assert arg or kind in ("run", "console"), f"{where}: <!-- doc: {kind} --> needs an argument"
        found.append(Block(where, kind, arg, fence[2]))
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_block_says_what_it_is(path: Path) -> None:
    assert blocks(path)


def normalised(text: str) -> str:
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"\b([a-z][\w.-]*)-[0-9a-f]{32}\b", r"\1-ID", text)
    text = re.sub(r"\d+\.\d+", "N.N", text)
    return "\n".join(" ".join(line.split()) for line in text.strip("\n").splitlines())


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected`` (both normalised), ``...`` lines standing for
    any number of lines."""
    parts = [
        r"(?:[^\n]*\n)*?" if line == "..." else re.escape(line) + r"\n"
        for line in normalised(expected).splitlines()
    ]
    return re.fullmatch("".join(parts), normalised(actual) + "\n") is not None


class Session:
    """One document being followed, as a user at a shell."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.cwd = root
        self.env = env
        self.started: list[tuple[str, subprocess.Popen[str], threading.Thread]] = []
        self._pwd = root.parent / "pwd"

    def shell(self, script: str, where: str) -> str:
        """Run ``script`` in bash where the last one left off; its output."""
        done = subprocess.run(
            ["bash", "-c", f"set -e\n{script}\npwd > {self._pwd}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=STEP,
        )
        assert done.returncode == 0, f"{where}: exit {done.returncode}:\n{script}\n{done.stdout}"
        self.cwd = Path(self._pwd.read_text().strip())
        return done.stdout

    def file(self, block: Block) -> None:
        target = self.cwd / block.arg
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)

    def console(self, block: Block) -> None:
        for command, expected in commands(block):
            actual = self.shell(command, block.where)
            assert matches(expected, actual), (
                f"{block.where}: `{command}` printed\n{actual}\nwhere the document shows\n"
                f"{expected}"
            )

    def start(self, block: Block) -> None:
        command = commands(block)[0][0] if block.text.startswith("$ ") else block.text.strip()
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # stopped as a group: make and what it runs
        )
        seen = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if block.arg in line:
                    seen.set()
            seen.set()  # ended: the check below says whether it printed the pattern

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.started.append((block.where, process, reader))
        seen.wait(START)
        assert any(block.arg in line for line in lines), (
            f"{block.where}: `{command}` never printed {block.arg!r}:\n{''.join(lines)}"
        )

    def stop(self) -> None:
        for where, process, reader in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)  # a graceful stop: deregister, drain (nothing in flight)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise AssertionError(f"{where}: did not stop on SIGTERM") from None
            finally:
                # Its output ends when every process holding it has exited; one that
                # outlived the group (a session of its own) would block close() forever.
                reader.join(60)
                if reader.is_alive():
                    raise AssertionError(f"{where}: a process it started outlived it")
                if process.stdout is not None:
                    process.stdout.close()


def commands(block: Block) -> list[tuple[str, str]]:
    """A console block's ``$ command`` lines, each with the output shown under it."""
    found: list[tuple[str, str]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], ""))
        else:
            assert found, f"{block.where}: a console block starts with `$ command`"
            command, output = found[-1]
            found[-1] = (command, output + line + "\n")
    return found


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with running(tmp_path) as server:
        yield server


@pytest.mark.backend  # etcd, make and bash: a skip fails under MICRO_REQUIRE_BACKENDS=1
@pytest.mark.timeout(1800)  # a scaffold's make test and every step of a tour
@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_document_runs_as_written(path: Path, tmp_path: Path, etcd: EtcdServer) -> None:
    for tool in ("make", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    root = tmp_path / "user"
    root.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    # A user's shell, not this run's: no MICRO_ settings, and no make of ours around
    # it (MAKELEVEL would make the scaffold's make print "Entering directory").
    outer = ("MICRO_", "PYTHON", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(outer)}
    env.update(
        PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
        MICRO_REGISTRY="etcd",
        MICRO_REGISTRY_ADDRESS=etcd.endpoint,
        PYTHON=sys.executable,  # a scaffold's make uses this interpreter, no new .venv
    )
    session = Session(root, env)
    written: list[str] = []
    try:
        for block in blocks(path):
            if block.kind == "file":
                session.file(block)
                if block.arg.endswith(".py"):
                    written.append(str(session.cwd / block.arg))
            elif block.kind == "run":
                session.shell(block.text, block.where)
            elif block.kind == "console":
                session.console(block)
            elif block.kind == "start":
                session.start(block)
    finally:
        session.stop()
    if written:
        typed = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", *written],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP,
        )
        assert typed.returncode == 0, typed.stdout + typed.stderr
