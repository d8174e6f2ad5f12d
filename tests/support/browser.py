"""Headless Chromium for tests, driven over the Chrome DevTools protocol: open a page,
evaluate JavaScript in it (promises awaited), read the result."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
START = 60.0  # seconds Chromium may take to start on a loaded machine
STOP = 30.0  # seconds its processes may take to end
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class Page:
    """One tab: ``evaluate(expression)`` is the value of a JavaScript expression."""

    def __init__(self, socket: ClientConnection, session: str) -> None:
        self._socket = socket
        self._session = session

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        answer = _send(
            self._socket,
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            self._session,
            timeout,
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression[:60]}…: {answer['exceptionDetails']}")
        return answer["result"].get("value")


@contextmanager
def page(url: str) -> Iterator[Page]:
    """Chromium with a fresh profile showing ``url``; stopped afterwards."""
    assert CHROMIUM is not None, "no chromium: make backends installs it"
    _heard.clear()
    with tempfile.TemporaryDirectory(prefix="micro-chromium-") as profile:
        process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its helpers share this group: ended as one
        )
        try:
            endpoint = _endpoint(process)
            with connect(endpoint, open_timeout=START, max_size=None) as socket:
                target = _send(socket, "Target.createTarget", {"url": "about:blank"})["targetId"]
                session = _send(
                    socket, "Target.attachToTarget", {"targetId": target, "flatten": True}
                )["sessionId"]
                _send(socket, "Page.enable", {}, session)
                _send(socket, "Page.navigate", {"url": url}, session)
                _event(socket, "Page.loadEventFired", session)  # scripts ran, not fetches
                yield Page(socket, session)
        finally:
            _stop(process, profile)


def _stop(process: subprocess.Popen[str], profile: str) -> None:
    """End the browser and every process it started before its profile is removed:
    helpers (the network service; crashpad, in a session of its own) can outlive the
    browser and still write there (seen: rmtree's "Directory not empty: 'Default'")."""
    process.terminate()
    try:
        process.wait(STOP)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.stderr is not None
    process.stderr.close()
    deadline = time.monotonic() + STOP
    while left := _remaining(process.pid, profile):
        if time.monotonic() > deadline:
            raise AssertionError(f"chromium's processes {left} did not end")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)  # polled: processes outside our children give no event to await


def _remaining(group: int, profile: str) -> list[int]:
    """Live processes in the browser's group or naming its profile (zombies write
    nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        state, _, pgrp = stat.rpartition(")")[2].split()[:3]
        if state != "Z" and (int(pgrp) == group or profile.encode() in cmdline):
            found.append(int(entry.name))
    return found


def _endpoint(process: subprocess.Popen[str]) -> str:
    """The browser's DevTools address, from the line Chromium prints at start."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # ends when Chromium exits; START bounds it in practice
        found = _LISTENING.search(line)
        if found:
            return found[1]
        seen.append(line)
    raise AssertionError("chromium exited before it listened:\n" + "".join(seen[-20:]))


def _event(socket: ClientConnection, name: str, session: str) -> None:
    """Wait for event ``name`` of the tab, which may have come while ``_send`` waited."""
    while True:
        message = _heard.pop(0) if _heard else json.loads(socket.recv(START))
        if message.get("method") == name and message.get("sessionId") == session:
            return


_heard: list[Any] = []  # events that arrived while an answer was awaited


_ids = itertools.count(1)


def _send(
    socket: ClientConnection,
    method: str,
    params: dict[str, Any],
    session: str | None = None,
    timeout: float = START,
) -> Any:
    number = next(_ids)
    message: dict[str, Any] = {"id": number, "method": method, "params": params}
    if session is not None:
        message["sessionId"] = session
    socket.send(json.dumps(message))
    while True:
        answer = json.loads(socket.recv(timeout))
        if "method" in answer:
            _heard.append(answer)
        elif answer.get("id") == number:
            if "error" in answer:
                raise AssertionError(f"{method}: {answer['error']}")
            return answer["result"]
