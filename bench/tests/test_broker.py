"""The broker driver against in-process backends: measured, skipped, failed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from bench import broker
from bench.tests import broker_memory

SMALL = broker.Settings(0.01, 20, 50, 10, min_rounds=2, max_rounds=2, budget_s=5.0)


def module(name: str, **attributes: object) -> ModuleType:
    made = ModuleType(f"bench.broker_{name}")
    made.NAME = name  # type: ignore[attr-defined]
    for key, value in attributes.items():
        setattr(made, key, value)
    return made


def test_memory_backend_is_measured_micro_against_raw() -> None:
    (result,) = asyncio.run(broker.compare_module(broker_memory, SMALL))
    assert result["status"] == "ok", result
    assert result["variant"] == "memory"
    for side in ("micro", "raw"):
        stats = result["sides"][side]
        assert stats["msgs_per_s"]["n"] == 2
        assert stats["msgs_per_s"]["min"] > 0
        assert 0 < stats["p50_ms"] <= stats["p99_ms"]
    assert result["ratio"]["n"] == 2
    assert result["ratio"]["median"] > 0
    assert result["meets_target"] == (result["ratio"]["median"] >= broker.TARGET)


def test_variants_run_on_one_server() -> None:
    started: list[str] = []

    @contextmanager
    def server() -> Iterator[str]:
        started.append("server")
        yield "in-process"

    variants = [
        ("memory-a", broker_memory.run_micro, broker_memory.run_raw),
        ("memory-b", broker_memory.run_raw, broker_memory.run_raw),
    ]
    results = asyncio.run(
        broker.compare_module(module("twice", server=server, VARIANTS=variants), SMALL)
    )
    assert [r["variant"] for r in results] == ["memory-a", "memory-b"]
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert started == ["server"]


def test_a_server_that_does_not_start_is_skipped_with_its_reason() -> None:
    @contextmanager
    def server() -> Iterator[str]:
        raise FileNotFoundError("nats-server not installed")
        yield ""

    fake = module("absent", server=server, run_micro=None, run_raw=None)
    (result,) = asyncio.run(broker.compare_module(fake, SMALL))
    assert result["status"] == "skipped"
    assert result["variant"] == "absent"
    assert "nats-server not installed" in result["reason"]


def test_an_unreachable_server_is_skipped_naming_its_address() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"

    @contextmanager
    def server() -> Iterator[str]:
        yield address

    async def connect(address: str, count: int) -> tuple[float, list[float]]:
        host, _, port = address.rpartition(":")
        await asyncio.open_connection(host, int(port))
        return 0.0, []

    fake = module("refused", server=server, run_micro=connect, run_raw=connect)
    (result,) = asyncio.run(broker.compare_module(fake, SMALL))
    assert result["status"] == "skipped"
    assert address in result["reason"]


def test_a_failure_after_warm_up_is_an_error_and_the_next_variant_runs() -> None:
    runs = 0

    async def flaky(address: str, count: int) -> tuple[float, list[float]]:
        nonlocal runs
        runs += 1
        if runs > 1:
            raise RuntimeError("subscriber lost")
        return 1.0, [0.001] * count

    @contextmanager
    def server() -> Iterator[str]:
        yield "in-process"

    variants = [
        ("flaky", flaky, broker_memory.run_raw),
        ("memory", broker_memory.run_micro, broker_memory.run_raw),
    ]
    results = asyncio.run(
        broker.compare_module(module("mixed", server=server, VARIANTS=variants), SMALL)
    )
    assert results[0] == {
        "variant": "flaky",
        "status": "error",
        "reason": "RuntimeError: subscriber lost",
    }
    assert results[1]["status"] == "ok"


def test_missing_latencies_are_an_error_of_the_module() -> None:
    async def lossy(address: str, count: int) -> tuple[float, list[float]]:
        return 1.0, [0.001] * (count - 1)

    @contextmanager
    def server() -> Iterator[str]:
        yield "in-process"

    fake = module("lossy", server=server, run_micro=lossy, run_raw=lossy)
    (result,) = asyncio.run(broker.compare_module(fake, SMALL))
    assert result["status"] == "error"
    assert "9 latencies returned" in result["reason"]


def test_a_slow_backend_gets_fewer_messages_per_run() -> None:
    settings = broker.Settings(0.5, 100, 5000, 200, min_rounds=4, max_rounds=10, budget_s=10.0)
    assert settings.count(warmup_s=1.0) == 100  # 200/s: 100 in half a second
    assert settings.count(warmup_s=0.1) == 1000
    assert settings.count(warmup_s=0.001) == 5000
    assert settings.count(warmup_s=60.0) == 100


def test_discovered_modules_follow_the_naming_rule() -> None:
    found = broker.discover()
    assert all(name.startswith("bench.broker_") for name in found)
    assert "bench.broker" not in found
    assert "bench.tests.broker_memory" not in found
