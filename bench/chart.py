"""The chart (bench/results.png): one small panel per figure, medians with spread."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

Results = dict[str, Any]
Panel = Callable[[Axes], None]
COLUMNS = 4


def _errorbar(
    ax: Axes, xs: list[float], spreads: list[dict[str, float]], label: str, scale: float = 1.0
) -> None:
    medians = [s["median"] * scale for s in spreads]
    below = [(s["median"] - s["min"]) * scale for s in spreads]
    above = [(s["max"] - s["median"]) * scale for s in spreads]
    ax.errorbar(xs, medians, yerr=[below, above], fmt="o-", capsize=3, markersize=4, label=label)


def _bars(
    ax: Axes,
    groups: list[str],
    series: dict[str, list[dict[str, float]]],
    scale: float = 1.0,
    low: str = "min",
    high: str = "max",
) -> None:
    """Grouped bars of medians with error bars from ``low`` to ``high`` (min-max, or
    q1-q3 where outliers would hide the rest), one series per variant."""
    width = 0.8 / max(len(series), 1)
    for i, (name, spreads) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        medians = [s["median"] * scale for s in spreads]
        below = [(s["median"] - s[low]) * scale for s in spreads]
        above = [(s[high] - s["median"]) * scale for s in spreads]
        ax.bar(xs, medians, width, yerr=[below, above], capsize=3, label=name)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.legend(fontsize=7)


def _codegen(section: Results) -> list[Panel]:
    def panel(ax: Axes) -> None:
        inputs = section["inputs"]
        groups = [e["input"].replace(" (", "\n(") for e in inputs]
        series = {v: [e["seconds"][v] for e in inputs] for v in section["variants"]}
        _bars(ax, groups, series, scale=1e3)
        ax.set_yscale("log")
        ax.set_ylabel("ms per run (log)")
        ax.set_title("codegen: protoc --micro_out vs --grpc_python_out", fontsize=9)

    return [panel]


def _rpc_throughput(ax: Axes, rows: list[Results], title: str) -> None:
    for name in rows[0]["variants"]:
        spreads = [r["variants"][name]["calls_per_s"] for r in rows]
        _errorbar(ax, list(range(len(rows))), spreads, name)
    ax.set_xticks(range(len(rows)), [str(r["concurrency"]) for r in rows])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("calls/s (median, min-max)")
    ax.set_title(f"rpc {title}: throughput", fontsize=9)
    ax.legend(fontsize=7)


def _rpc_latency(ax: Axes, rows: list[Results], title: str) -> None:
    xs = list(range(len(rows)))
    for name in rows[0]["variants"]:
        (line,) = ax.plot(xs, [r["variants"][name]["p50_us"] for r in rows], "o-", ms=4)
        line.set_label(f"{name} p50")
        p99 = [r["variants"][name]["p99_us"] for r in rows]
        ax.plot(xs, p99, "x--", color=line.get_color(), ms=4)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(r["concurrency"]) for r in rows])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("latency us (o p50, x p99; log)")
    ax.set_title(f"rpc {title}: latency", fontsize=9)
    ax.legend(fontsize=7)


def _rpc(section: Results) -> list[Panel]:
    results = section["results"]
    panels: list[Panel] = []
    for mode, shape in dict.fromkeys((r["mode"], r["shape"]) for r in results):
        rows = [r for r in results if (r["mode"], r["shape"]) == (mode, shape)]
        title = f"{mode} {shape}"
        panels += [
            partial(_rpc_throughput, rows=rows, title=title),
            partial(_rpc_latency, rows=rows, title=title),
        ]

    groups = [f"{r['mode'][0]}-{r['shape'][0]}\n{r['concurrency']}" for r in results]
    compared = [n for n, ratio in results[0]["ratios"].items() if ratio["kind"] != "peer"]

    def ratios(ax: Axes) -> None:
        width = 0.8 / max(len(compared), 1)
        for i, name in enumerate(compared):
            xs = [g + (i - (len(compared) - 1) / 2) * width for g in range(len(results))]
            paired = [r["ratios"][name]["calls_per_s_paired"] for r in results]
            ax.errorbar(
                xs,
                [p["median"] for p in paired],
                yerr=[
                    [p["median"] - p["q1"] for p in paired],
                    [p["q3"] - p["median"] for p in paired],
                ],
                fmt="o",
                capsize=2,
                ms=3,
                label=name,
            )
        for g, r in enumerate(results):
            ax.hlines(r["target"], g - 0.4, g + 0.4, colors="red", linestyles="dashed", lw=0.8)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(groups)), groups, fontsize=6)
        ax.set_ylabel("variant / raw calls/s, per round")
        ax.set_title(
            "rpc ratio to raw, median and IQR of rounds (a/s: async/sync, u/s: unary/stream; "
            "red: target)",
            fontsize=8,
        )
        ax.legend(fontsize=7)

    def overhead(ax: Axes) -> None:
        series = {n: [r["ratios"][n]["overhead_cpu_us"] for r in results] for n in compared}
        _bars(ax, groups, series, low="q1", high="q3")
        ax.set_xticks(range(len(groups)), groups, fontsize=6)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_ylabel("extra client CPU us per call vs raw")
        ax.set_title("rpc overhead per call: median and IQR of per-round differences", fontsize=9)

    return [*panels, ratios, overhead]


def _scale(section: Results) -> list[Panel]:
    servers = section["servers"]
    selection = section["selection"]

    def throughput(ax: Axes) -> None:
        counts = [str(r["servers"]) for r in servers]
        for name in servers[0]["variants"]:
            spreads = [r["variants"][name]["calls_per_s"] for r in servers]
            _errorbar(ax, list(range(len(servers))), spreads, name)
        ax.set_xticks(range(len(servers)), counts)
        ax.set_xlabel("server processes")
        ax.set_ylabel("calls/s")
        ax.set_title(f"scale: async unary, c={servers[0]['concurrency']}", fontsize=9)
        ax.legend(fontsize=7)

    def choosing(ax: Axes) -> None:
        nodes = list(selection["ns_per_selection"])
        spreads = [selection["ns_per_selection"][n] for n in nodes]
        _errorbar(ax, [float(n) for n in nodes], spreads, "per call", scale=1e-3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes registered")
        ax.set_ylabel("us per call start (log)")
        ax.set_title("selection cost by registry size (flat is the goal)", fontsize=9)
        ax.legend(fontsize=7)

    return [throughput, choosing]


def _registry(section: Results) -> list[Panel]:
    lookups = section["lookups"]
    failover = section["failover"]

    def rates(ax: Axes) -> None:
        names = list(lookups["lookups_per_s"])
        _bars(ax, names, {"lookups/s": [lookups["lookups_per_s"][n] for n in names]})
        ax.axhline(lookups["target_per_s"], color="red", linestyle="dashed", lw=0.8)
        ax.set_yscale("log")
        ax.set_title("registry lookups/s (red: target)", fontsize=9)

    def kills(ax: Axes) -> None:
        rounds = failover["rounds"]
        xs = list(range(1, len(rounds) + 1))
        ax.bar(xs, [r["last_attempt_ms"] for r in rounds])
        for x, r in zip(xs, rounds, strict=True):
            ax.annotate(
                f"{r['attempts_to_dead_node']} sent\n{r['failed_calls']} failed",
                (x, r["last_attempt_ms"]),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.set_xticks(xs)
        ax.set_xlabel("kill")
        ax.set_ylabel("ms from kill -9 to last attempt")
        ax.set_title("failover: last attempt sent to a killed node", fontsize=9)

    return [rates, kills]


def _broker(section: Results) -> list[Panel]:
    measured = [r for r in section["results"] if r["status"] == "ok"]
    others = [f"{r['variant']}: {r['status']}" for r in section["results"] if r["status"] != "ok"]

    def note(ax: Axes) -> None:
        if others:
            ax.text(0.01, 0.99, "\n".join(others), transform=ax.transAxes, va="top", fontsize=7)

    def throughput(ax: Axes) -> None:
        names = [r["variant"] for r in measured]
        _bars(
            ax,
            names,
            {s: [r["sides"][s]["msgs_per_s"] for r in measured] for s in ("micro", "raw")},
        )
        for g, r in enumerate(measured):
            top = max(r["sides"][s]["msgs_per_s"]["max"] for s in ("micro", "raw"))
            ax.annotate(
                f"{r['ratio']['median']:.2f}x", (g, top), ha="center", va="bottom", fontsize=7
            )
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("msgs/s (log)")
        ax.set_title(
            f"broker throughput (label: micro/raw, target {section['target']})", fontsize=9
        )
        note(ax)

    def latency(ax: Axes) -> None:
        names = [r["variant"] for r in measured]
        width = 0.2
        for i, (side, q) in enumerate(
            (("micro", "p50"), ("raw", "p50"), ("micro", "p99"), ("raw", "p99"))
        ):
            xs = [g + (i - 1.5) * width for g in range(len(measured))]
            ax.bar(xs, [r["sides"][side][f"{q}_ms"] for r in measured], width, label=f"{side} {q}")
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("publish -> handle ms (log)")
        ax.set_title("broker latency", fontsize=9)
        ax.legend(fontsize=7)
        note(ax)

    return [throughput, latency]


PANELS: dict[str, Callable[[Results], list[Panel]]] = {
    "codegen": _codegen,
    "rpc": _rpc,
    "scale": _scale,
    "registry": _registry,
    "broker": _broker,
}


def write_png(results: Results, path: Path) -> None:
    panels = [p for name, make in PANELS.items() if name in results for p in make(results[name])]
    rows = max(1, -(-len(panels) // COLUMNS))
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(6 * COLUMNS, 4.6 * rows), squeeze=False)
    cells = [ax for row in axes for ax in row]
    for panel, ax in zip(panels, cells, strict=False):
        panel(ax)
    for ax in cells[len(panels) :]:
        ax.set_visible(False)
    env = results["environment"]
    fig.suptitle(
        f"micro-grpc bench - python {env['python']}, grpcio {env['grpcio']}, "
        f"{env['cpus_usable']} cpus{' (quick run)' if results['quick'] else ''}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # room for the title
    fig.savefig(path, dpi=90)
    plt.close(fig)
