"""Suite-wide rules: a test marked ``backend`` may skip locally when its server is
missing, but under ``MICRO_REQUIRE_BACKENDS=1`` (CI) that skip is a failure; and no test
can hang the run."""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
import threading
from collections.abc import Generator

import pytest

REQUIRE_BACKENDS = os.environ.get("MICRO_REQUIRE_BACKENDS") == "1"

# Generated code is no test, whatever its name (interop's test.proto makes test_micro.py).
collect_ignore_glob = ["gen/*"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_BACKENDS and report.skipped and item.get_closest_marker("backend"):
        report.outcome = "failed"
        report.longrepr = f"backend missing under MICRO_REQUIRE_BACKENDS=1: {report.longrepr}"


# pytest-timeout interrupts a test from a signal handler, which runs only when the main
# thread is back in Python: a test stuck inside grpc's C core would hang the whole run
# until CI kills it, with nothing printed. This watchdog is a thread: past the test's own
# timeout and this margin it prints every thread's stack where CI shows it and exits.
# faulthandler's own timer, later still, exits even if something never lets go of the GIL.
WATCHDOG_MARGIN = 120.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker else float(item.config.getini("timeout"))
    capture = item.config.pluginmanager.getplugin("capturemanager")

    def bark() -> None:
        if capture is not None:
            capture.suspend_global_capture(in_=True)
        sys.stderr.write(f"\n{item.nodeid} still running {limit + WATCHDOG_MARGIN:.0f} s on:\n")
        faulthandler.dump_traceback(sys.stderr)
        os._exit(1)

    watchdog = threading.Timer(limit + WATCHDOG_MARGIN, bark)
    watchdog.daemon = True
    watchdog.start()
    faulthandler.dump_traceback_later(limit + 2 * WATCHDOG_MARGIN, exit=True)
    try:
        yield
    finally:
        watchdog.cancel()
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
