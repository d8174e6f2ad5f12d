"""The observability bench runs its seven variants and reports micro's added cost
against the OpenTelemetry instrumentation's."""

from __future__ import annotations

from bench import observe, report


def test_every_variant_is_measured_and_compared() -> None:
    section = observe.run(True, lambda message: None)
    [result] = section["results"]  # the quick run: concurrency 1 only
    variants = result["variants"]
    assert list(variants) == [
        observe.RAW,
        observe.INSTRUMENTED,
        observe.MICRO,
        observe.IDLE,
        observe.TRACED,
        observe.COUNTED,
        observe.OBSERVED,
    ]
    assert all(stats["calls"] > 0 for stats in variants.values())
    added = result["instrumentation_vs_raw"]["overhead_cpu_us"]["median"]
    assert result["added_cpu_ratio"] is None or result["added_cpu_ratio"] == (
        result["observe_vs_micro"]["overhead_cpu_us"]["median"] / added
    )
    table = report.observe_table(section)
    assert any(line.split()[1:2] == [observe.OBSERVED] for line in table)
