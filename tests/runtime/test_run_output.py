"""``Service.run()`` says where it serves when it starts and that it stopped."""

from __future__ import annotations

import os
import re
import select
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
            # The line comes once it serves (a memory registry: no waiting on anything);
            # 60 s bounds a start on a loaded machine, so a missing line fails, not hangs.
            readable, _, _ = select.select([process.stderr], [], [], 60)
            assert readable, "Service.run() printed nothing at start"
            started = process.stderr.readline()
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
