"""micro run: SIGTERM stops the service gracefully with exit 0; --reload restarts it
after a source change; a bad target is one line."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from cli_support import Running, micro, unique

pytestmark = pytest.mark.backend

APP = """
import micro

VERSION = "{version}"


async def create_service() -> micro.Service:
    return micro.Service("{name}", version=VERSION, grace=1.0)
"""


def write_app(directory: Path, name: str, version: str) -> Path:
    path = directory / "app.py"
    path.write_text(APP.format(name=name, version=version))
    return path


def test_run_then_sigterm_exits_zero(tmp_path: Path, multicast: None) -> None:
    name = unique("app")
    write_app(tmp_path, name, "1")
    running = Running("run", "app:create_service", cwd=tmp_path)
    try:
        found = running.wait_for(rf"micro run: {name} serving on (\S+) as (\S+)")
        listed = micro("describe", name, "--json")
        assert listed.returncode == 0, listed.stderr
    finally:
        code, _ = running.stop()
    assert code == 0
    running.wait_for(rf"micro run: {found[2]} stopped")  # read to the end by stop()
    assert '"version": "1"' in listed.stdout


def test_reload_restarts_after_a_change(tmp_path: Path, multicast: None) -> None:
    name = unique("app")
    path = write_app(tmp_path, name, "1")
    running = Running("run", "app:create_service", "--reload", cwd=tmp_path)
    try:
        first = running.wait_for(rf"{name} serving on \S+ as (\S+)")
        write_app(tmp_path, name, "2")
        later = time.time() + 5  # a new mtime even where its resolution is coarse
        os.utime(path, (later, later))
        running.wait_for(r"micro run: .*app\.py changed, restarting")  # polled every 0.3 s
        running.wait_for(rf"micro run: {first[1]} stopped")
        second = running.wait_for(rf"{name} serving on \S+ as (\S+)")
        assert second[1] != first[1]
        described = micro("describe", name, "--json")
    finally:
        code, _ = running.stop()
    assert code == 0
    assert '"version": "2"' in described.stdout


def test_reload_child_stops_when_the_reloader_is_killed(tmp_path: Path, multicast: None) -> None:
    """The served child runs in a session of its own (Ctrl-C reaches only the reloader),
    so a SIGKILL of the reloader's group misses it: it must notice and stop by itself,
    not serve on orphaned, holding its port, its registry entry and our stderr pipe."""
    name = unique("app")
    write_app(tmp_path, name, "1")
    running = Running("run", "app:create_service", "--reload", cwd=tmp_path)
    try:
        served = running.wait_for(rf"{name} serving on \S+ as (\S+)")
        running.process.send_signal(signal.SIGKILL)
        running.wait_for(rf"micro run: {served[1]} stopped", timeout=30)  # grace 1 s
    finally:
        running.process.wait()
    running.reader.join(30)  # stderr ends when its last holder, the child, has exited
    assert not running.reader.is_alive()
    for pipe in (running.process.stdout, running.process.stderr):
        assert pipe is not None
        pipe.close()


def test_run_bad_target_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("")
    done = micro("run", "empty", MICRO_REGISTRY="memory", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "micro run: empty has no `service` or `create_service`: name it, MODULE:ATTR"
    ]
