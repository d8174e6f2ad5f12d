"""Interleaved rounds and the statistics reported for them.

Variants are measured in rounds that alternate their order (A B, B A, A B, ...), so
slow drift of a noisy machine (another process waking up, CPU frequency) falls on
every variant alike. Summaries are medians with min-max and the interquartile range,
never means: one preempted round must not move the headline figure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linearly interpolated (``q`` in [0, 1])."""
    if not ordered:
        raise ValueError("quantile of no values")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Spread:
    """Median of samples with what it hides: min, max and the quartiles."""

    n: int
    median: float
    min: float
    max: float
    q1: float
    q3: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        ordered = sorted(samples)
        return cls(
            n=len(ordered),
            median=quantile(ordered, 0.5),
            min=ordered[0],
            max=ordered[-1],
            q1=quantile(ordered, 0.25),
            q3=quantile(ordered, 0.75),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def order(names: Sequence[str], index: int) -> list[str]:
    """The variants in the order round ``index`` runs them: odd rounds reversed."""
    return list(names) if index % 2 == 0 else list(reversed(names))


def rounds(minimum: int, maximum: int, budget_s: float) -> Iterator[int]:
    """Round indexes: at least ``minimum``, then more while ``budget_s`` seconds
    since the first round have not passed, never more than ``maximum``."""
    start = time.perf_counter()
    for index in range(maximum):
        if index >= minimum and time.perf_counter() - start > budget_s:
            return
        yield index


def paired_ratios(baseline: Sequence[float], other: Sequence[float]) -> list[float]:
    """``other / baseline`` round by round: rounds next to each other share the
    machine's state, so their ratio is steadier than either number."""
    return [o / b for b, o in zip(baseline, other, strict=True) if b > 0]


def paired_differences(baseline: Sequence[float], other: Sequence[float]) -> list[float]:
    """``other - baseline`` round by round, for costs (microseconds per call) whose
    difference, not ratio, is the figure: what one more layer adds to each call."""
    return [o - b for b, o in zip(baseline, other, strict=True)]
