"""A blocking client in a plain script exits quietly, closed or not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import Node, environment

# Other tests on this loopback announce malformed mDNS entries on purpose, which the
# registry warns about; asyncio's own logger (the one that reports a task destroyed
# while pending) stays as it is.
SCRIPT = """\
import logging
import sys

import micro
from greeter.v1.greeter_micro import GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloRequest

logging.getLogger("micro.registry").setLevel(logging.ERROR)
client = micro.Client()
greeter = GreeterSyncClient(sys.argv[1], client)
print(greeter.say_hello(HelloRequest(name="Ada"), timeout=10).message)
if sys.argv[2] == "close":
    client.close_sync()
"""


@pytest.mark.backend  # the greeter node is found over loopback mDNS
@pytest.mark.parametrize("ending", ["close", "forget"])
def test_blocking_script_exits_quietly(greeter: Node, tmp_path: Path, ending: str) -> None:
    script = tmp_path / "hello.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), greeter.name, ending],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello, Ada!\n"
    assert done.stderr == ""  # was: Task was destroyed but it is pending! … _follow()
