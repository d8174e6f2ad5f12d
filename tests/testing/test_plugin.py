"""The pytest plugin, as a user's project sees it: installed with micro-grpc, its
fixtures serve async tests (pytest-asyncio, strict mode too) and plain ones, and a
project that uses none of them gets nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime_support import GEN, HERE

PROJECT = """
import echo_micro
import echo_pb2
import pytest
from echo_node import Echo


@pytest.mark.asyncio
async def test_async(micro_harness):
    await micro_harness.serve("echo", Echo("a"))
    echo = micro_harness.client(echo_micro.EchoClient, "echo")
    assert (await echo.get(echo_pb2.EchoRequest(), timeout=10)).node == "a"


def test_plain(micro_sync_harness):
    micro_sync_harness.serve("echo", Echo("p"))
    echo = micro_sync_harness.client(echo_micro.EchoSyncClient, "echo")
    assert echo.get(echo_pb2.EchoRequest(), timeout=10).node == "p"
"""

UNUSED = """
import threading


def test_nothing_of_micro_started(request):
    assert [f for f in request.fixturenames if "micro" in f] == []  # none runs unasked
    assert threading.enumerate() == [threading.main_thread()]
"""


def pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest run in ``project`` as its own: no configuration of this repository's."""
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MICRO_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(GEN), str(HERE)])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # two short tests; a loaded machine starts Python slowly
    )


def test_fixtures_serve_async_and_plain_tests(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(PROJECT)
    done = pytest_in(tmp_path, "-W", "error")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_a_project_using_no_fixture_gets_nothing_started(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(UNUSED)
    done = pytest_in(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = pytest_in(tmp_path, "--fixtures")
    assert "micro_harness" in listed.stdout
    assert "micro_sync_harness" in listed.stdout
