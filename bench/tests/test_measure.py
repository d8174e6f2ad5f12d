"""Statistics of interleaved rounds, and the per-round comparison built on them."""

from __future__ import annotations

import pytest

from bench import load, measure


def test_spread_is_median_quartiles_and_range() -> None:
    spread = measure.Spread.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (spread.n, spread.median, spread.min, spread.max) == (5, 3.0, 1.0, 5.0)
    assert (spread.q1, spread.q3) == (2.0, 4.0)


def test_rounds_alternate_order() -> None:
    assert [measure.order(["a", "b", "c"], i) for i in range(3)] == [
        ["a", "b", "c"],
        ["c", "b", "a"],
        ["a", "b", "c"],
    ]


def test_versus_pairs_rounds_so_a_shared_slowdown_cancels() -> None:
    # Round 2 ran on a busy machine: both variants halved; the ratio stays 0.9.
    raw = [load.Round(1000, 1.0, 0.2, [1000] * 1000), load.Round(500, 1.0, 0.1, [2000] * 500)]
    micro = [load.Round(900, 1.0, 0.2, [1100] * 900), load.Round(450, 1.0, 0.1, [2200] * 450)]
    compared = load.versus(raw, micro)
    assert compared["calls_per_s"] == pytest.approx(0.9)
    assert compared["calls_per_s_paired"]["min"] == pytest.approx(0.9)
    assert compared["calls_per_s_paired"]["max"] == pytest.approx(0.9)
    # 200 us vs 222.2 us of CPU per call in both rounds.
    assert compared["overhead_cpu_us"]["median"] == pytest.approx(22.22, abs=0.01)
    assert compared["overhead_p50_us"]["median"] == pytest.approx(0.15)


def test_variant_stats_quantiles_cover_every_call() -> None:
    rounds = [load.Round(2, 1.0, 0.0, [1000, 3000]), load.Round(2, 0.5, 0.001, [2000, 4000])]
    stats = load.variant_stats(rounds)
    assert stats["calls"] == 4
    assert stats["calls_per_s"]["median"] == pytest.approx(3.0)
    assert stats["p50_us"] == pytest.approx(2.5)
    assert stats["cpu_us_per_call"] == pytest.approx(250.0)
