"""Suite-wide rules: a test marked ``backend`` may skip locally when its server is
missing, but under ``MICRO_REQUIRE_BACKENDS=1`` (CI) that skip is a failure."""

from __future__ import annotations

import os
import socket
from collections.abc import Generator

import pytest

REQUIRE_BACKENDS = os.environ.get("MICRO_REQUIRE_BACKENDS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_BACKENDS and report.skipped and item.get_closest_marker("backend"):
        report.outcome = "failed"
        report.longrepr = f"backend missing under MICRO_REQUIRE_BACKENDS=1: {report.longrepr}"


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
