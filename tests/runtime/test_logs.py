"""Throttled log lines, with a fake clock: what a flood of bad input leaves in the log."""

from __future__ import annotations

import logging

import pytest

from micro.logs import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_per_window_then_debug_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "flood")
    clock = Clock()
    throttle = Throttle(logging.getLogger("flood"), "bad things", burst=3, window=60, clock=clock)
    for i in range(1000):
        throttle.log(logging.WARNING, "bad thing %d", i)
    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.DEBUG]
    assert loud == [
        ("WARNING", "bad thing 0"),
        ("WARNING", "bad thing 1"),
        ("WARNING", "bad thing 2"),
        ("WARNING", "further bad things are logged at DEBUG for 60 s"),
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG][-1] == (
        "bad thing 999"  # none lost: the rest at DEBUG
    )
    caplog.clear()
    clock.now += 59.9
    throttle.log(logging.ERROR, "still within the window")
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
    caplog.clear()
    clock.now += 0.1  # a new window: the count of the last, then a new burst
    throttle.log(logging.ERROR, "a new window")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "998 more bad things were logged at DEBUG only"),
        ("ERROR", "a new window"),
    ]
