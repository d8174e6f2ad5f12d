"""The gateway benchmark runs end to end in its quick form: every variant answers and
is measured, and the ratios are there (their values are the report's, not a test's)."""

from __future__ import annotations

from bench import gateway


def test_quick_run_measures_every_variant() -> None:
    lines: list[str] = []
    section = gateway.run(True, lines.append)
    rows = section["results"]
    assert [row["concurrency"] for row in rows] == list(gateway.settings_for(True).concurrency)
    for row in rows:
        assert set(row["variants"]) == {gateway.DIRECT, gateway.GATEWAY, gateway.FLOOR}
        assert all(stats["calls"] > 0 for stats in row["variants"].values())
        assert row["gateway_vs_direct"]["calls_per_s"] > 0
        assert row["gateway_vs_floor"]["calls_per_s"] > 0
    assert len(lines) == len(rows)
