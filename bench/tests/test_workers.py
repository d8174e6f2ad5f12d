"""The workers section: every worker count and the raw server measured in one run."""

from __future__ import annotations

import pytest
from registry_support import loopback_multicast

from bench import report, workers

pytestmark = pytest.mark.backend  # the workers are found through loopback mDNS


def test_each_worker_count_is_measured_against_one_and_raw() -> None:
    problem = loopback_multicast()
    if problem is not None:
        pytest.skip(problem)
    settings = workers.Settings(
        (1, 2), clients=2, concurrency=4, rounds=2, round_s=0.1, warmup_s=0.1
    )
    section = workers.compare(settings, lambda line: None)
    assert [r["workers"] for r in section["results"]] == [1, 2]
    assert section["raw_calls_per_s"]["min"] > 0
    for result in section["results"]:
        assert result["calls_per_s"]["n"] == 2
        assert result["calls_per_s"]["min"] > 0
        assert result["efficiency"] == result["ratio_to_one"]["median"] / result["workers"]
    assert section["results"][0]["ratio_to_one"]["median"] == 1.0
    lines = report.workers_table(section)
    assert [line.split()[0] for line in lines[-2:]] == ["1", "2"]
