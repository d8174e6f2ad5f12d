"""Broker: micro's typed pub/sub against each backend's own client, per backend.

Backends plug in as modules ``bench/broker_<name>.py`` (found at run time, so one
that lands later needs no change here). A module exposes:

- ``NAME``: the backend's name;
- ``server()``: a context manager (plain or async) that makes a server available
  and yields its address; it raises if it cannot (the backend is then skipped);
- ``async run_micro(address, count)`` and ``async run_raw(address, count)``: publish
  ``count`` messages through micro / through the backend's client library, each to a
  subscriber of the same kind, and return ``(elapsed_s, latencies_s)`` with one
  publish-to-handle latency per message;
- or, instead of the two, ``VARIANTS``: a list of ``(name, run_micro, run_raw)`` for
  several setups on one server (core and persistent, say).

Micro and raw run interleaved rounds on the same server, each run of as many
messages as the slower side handles in about ``Settings.run_s`` (measured in the
warm-up), so a slow backend takes no longer than a fast one. Reported per variant:
messages/s (median and spread over rounds), p50/p99 latency over every message of
the measured rounds, and micro/raw messages/s as the median of per-round ratios,
against ``TARGET``. A backend whose module cannot be imported, whose server does not
start, or whose first (warm-up) round fails is reported as skipped with the reason;
a failure after that as an error. Neither stops the other backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pkgutil
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from bench import measure
from bench.environment import BENCH

TARGET = 0.8  # required messages/s ratio micro/raw
PREFIX = "broker_"
RUN_TIMEOUT_S = 60.0  # one run of ``count`` messages; longer is a hang

Run = Callable[[str, int], Awaitable[tuple[float, Sequence[float]]]]


@dataclass(frozen=True)
class Settings:
    run_s: float  # aimed duration of one run: sets the message count from the warm-up
    min_count: int  # messages per run, at least (p99 needs a hundred)
    max_count: int
    warmup_count: int
    min_rounds: int
    max_rounds: int
    budget_s: float  # per variant: no new round after this (past min_rounds)

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(0.1, 50, 500, 50, min_rounds=2, max_rounds=2, budget_s=2.0)
        return cls(0.6, 100, 5000, 200, min_rounds=4, max_rounds=10, budget_s=10.0)

    def count(self, warmup_s: float) -> int:
        """Messages per run for a backend that took ``warmup_s`` for the warm-up
        count: slow backends get fewer, so every backend fits the same time."""
        rate = self.warmup_count / max(warmup_s, 1e-6)
        return max(self.min_count, min(self.max_count, int(rate * self.run_s)))


class Skipped(Exception):
    """The backend cannot be measured here (no client library, no server)."""


class BadModule(Exception):
    """The backend module broke the interface above: a bug to fix, not a skip."""


def discover() -> list[str]:
    """Backend modules in ``bench/``, by module name."""
    return sorted(
        f"bench.{m.name}" for m in pkgutil.iter_modules([str(BENCH)]) if m.name.startswith(PREFIX)
    )


def variants(module: ModuleType) -> list[tuple[str, Run, Run]]:
    found: list[tuple[str, Run, Run]] | None = getattr(module, "VARIANTS", None)
    if found is not None:
        return list(found)
    return [(module.NAME, module.run_micro, module.run_raw)]


async def timed(run: Run, address: str, count: int) -> tuple[float, list[float]]:
    elapsed, latencies = await asyncio.wait_for(run(address, count), RUN_TIMEOUT_S)
    if len(latencies) != count:
        raise BadModule(f"{count} messages published, {len(latencies)} latencies returned")
    return elapsed, list(latencies)


async def compare_variant(
    name: str, run_micro: Run, run_raw: Run, address: str, settings: Settings
) -> dict[str, Any]:
    runs = {"micro": run_micro, "raw": run_raw}
    try:
        warmup_s = max(
            [(await timed(run, address, settings.warmup_count))[0] for run in runs.values()]
        )
    except BadModule:
        raise
    except Exception as e:
        raise Skipped(f"{name} at {address}: {_line(e)}") from None
    count = settings.count(warmup_s)
    rates: dict[str, list[float]] = {side: [] for side in runs}
    latencies: dict[str, list[float]] = {side: [] for side in runs}
    for index in measure.rounds(settings.min_rounds, settings.max_rounds, settings.budget_s):
        for side in measure.order(list(runs), index):
            elapsed, measured = await timed(runs[side], address, count)
            rates[side].append(count / elapsed)
            latencies[side] += measured
    ratio = measure.Spread.of(measure.paired_ratios(rates["raw"], rates["micro"]))
    stats = {}
    for side in runs:
        ordered = sorted(latencies[side])
        stats[side] = {
            "msgs_per_s": measure.Spread.of(rates[side]).as_dict(),
            "p50_ms": measure.quantile(ordered, 0.5) * 1e3,
            "p99_ms": measure.quantile(ordered, 0.99) * 1e3,
        }
    return {
        "variant": name,
        "status": "ok",
        "address": address,
        "messages_per_run": count,
        "sides": stats,
        "ratio": ratio.as_dict(),
        "meets_target": ratio.median >= TARGET,
    }


async def compare_module(
    module: ModuleType, settings: Settings, backend: str = ""
) -> list[dict[str, Any]]:
    """Every variant of one backend on one server; skips and errors become entries."""
    backend = getattr(module, "NAME", backend)
    results = []
    async with contextlib.AsyncExitStack() as stack:
        try:
            manager = module.server()
            if hasattr(manager, "__aenter__"):
                address = await stack.enter_async_context(manager)
            else:
                address = stack.enter_context(manager)
        except Exception as e:
            return [skipped(backend, f"no server: {_line(e)}")]
        for name, run_micro, run_raw in variants(module):
            try:
                results.append(await compare_variant(name, run_micro, run_raw, address, settings))
            except Skipped as e:
                results.append(skipped(name, str(e)))
            except Exception as e:
                results.append(failed(name, e))
    return results


def _line(e: BaseException) -> str:
    return traceback.format_exception_only(type(e), e)[-1].strip()


def skipped(name: str, reason: str) -> dict[str, Any]:
    return {"variant": name, "status": "skipped", "reason": reason}


def failed(name: str, error: BaseException) -> dict[str, Any]:
    return {"variant": name, "status": "error", "reason": _line(error)}


def measure_modules(
    names: Sequence[str], settings: Settings, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for name in names:
        backend = name.rpartition(".")[2].removeprefix(PREFIX)
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            results.append(skipped(backend, f"cannot import {name}: {e}"))
            continue
        log(f"broker: {getattr(module, 'NAME', backend)}")
        try:
            results += asyncio.run(compare_module(module, settings, backend))
        except Exception as e:  # stopping its server failed: keep the other backends
            results.append(failed(backend, e))
    return results


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = Settings.for_run(quick)
    modules = discover()
    if not modules:
        log("broker: no bench/broker_<name>.py modules")
    return {
        "settings": asdict(settings),
        "target": TARGET,
        "modules": modules,
        "results": measure_modules(modules, settings, log),
    }
