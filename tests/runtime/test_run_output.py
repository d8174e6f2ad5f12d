"""``Service.run()`` says where it serves when it starts and that it stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = """\
import micro
from micro.registry import MemoryRegistry

micro.Service("announced", version="1.2.3", registry=MemoryRegistry()).run()
"""


def test_run_prints_a_line_at_start_and_at_stop(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICRO_")}
    with subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stderr is not None
            started = process.stderr.readline()  # written once it serves: then stop it
            process.send_signal(signal.SIGTERM)
            rest = process.stderr.read()
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    found = re.fullmatch(
        r"announced 1\.2\.3 serving on 127\.0\.0\.1:\d+ as (announced-\w+); "
        r"registry MemoryRegistry, broker GrpcBroker\n",
        started,
    )
    assert found, started
    assert rest == f"{found[1]} stopped\n"
