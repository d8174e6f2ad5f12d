"""The chain without I/O: which hooks it holds, order, nesting, failing hooks."""

from __future__ import annotations

import logging

import grpc
import pytest

import micro
from micro import errors
from micro.middleware.base import Chain, begin, chain, end, failed


class Recorder(micro.Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def publish(self, message: micro.Outgoing) -> micro.Ending:
        self.log.append(f"begin {self.name}")
        return lambda outcome: self.log.append(f"end {self.name} {outcome.code.name}")


def outgoing() -> micro.Outgoing:
    return micro.Outgoing("t", None, {})


def test_no_middleware_is_no_chain() -> None:
    assert chain(None) is None
    assert chain([]) is None


def test_only_overridden_hooks_are_kept() -> None:
    built = Chain([Recorder("a", []), micro.Middleware()])
    assert len(built.publish) == 1
    assert [len(hooks) for hooks in (built.call, built.attempt, built.handle, built.deliver)] == [
        0
    ] * 4


def test_begin_in_order_end_in_reverse() -> None:
    log: list[str] = []
    built = Chain([Recorder("a", log), Recorder("b", log)])
    endings = begin(built.publish, outgoing())
    end(endings, failed(errors.NotFound("x")))
    assert log == ["begin a", "begin b", "end b NOT_FOUND", "end a NOT_FOUND"]


def test_a_failing_hook_ends_those_begun_and_propagates() -> None:
    log: list[str] = []

    class Refuse(micro.Middleware):
        def publish(self, message: micro.Outgoing) -> None:
            raise errors.PermissionDenied("no")

    built = Chain([Recorder("a", log), Refuse(), Recorder("c", log)])
    with pytest.raises(errors.PermissionDenied):
        begin(built.publish, outgoing())
    assert log == ["begin a", "end a PERMISSION_DENIED"]


def test_a_failing_ending_is_logged_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    class Broken(micro.Middleware):
        def publish(self, message: micro.Outgoing) -> micro.Ending:
            def ending(outcome: micro.Outcome) -> None:
                raise RuntimeError("broken ending")

            return ending

    built = Chain([Recorder("a", log), Broken()])
    with caplog.at_level(logging.ERROR, "micro.middleware"):
        end(begin(built.publish, outgoing()), micro.Outcome())
    assert log == ["begin a", "end a OK"]
    assert "broken ending" in caplog.text


def test_not_a_middleware_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"subclass micro\.Middleware"):
        chain([object()])  # type: ignore[list-item]


def test_outcome_codes() -> None:
    assert failed(errors.Unavailable("x")).code is grpc.StatusCode.UNAVAILABLE
    assert failed(ValueError("x")).code is grpc.StatusCode.UNKNOWN
    assert micro.Outcome().code is grpc.StatusCode.OK
