"""Broker tests: the at-least-once figures (duplicates per backend) in the summary."""

from __future__ import annotations

import pytest
from contract import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        str(value)
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for name, value in getattr(report, "user_properties", ())
        if name == SUMMARY and report.when == "call"
    ]
    if lines:
        terminalreporter.section("at least once across kill -9")
        for line in lines:
            terminalreporter.line(line)
