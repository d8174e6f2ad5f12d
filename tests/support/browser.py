"""Headless Chromium for tests, driven over the Chrome DevTools protocol: open a page,
evaluate JavaScript in it (promises awaited), read the result."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stderr is not None
            process.stderr.close()


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
