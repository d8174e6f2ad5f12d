"""Results as a table (stdout), JSON (bench/results.json) and a chart (results.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

Results = dict[str, Any]


def _range(spread: dict[str, float], fmt: str) -> str:
    return f"{spread['min']:{fmt}}-{spread['max']:{fmt}}"


def _seconds(value: float) -> str:
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.3f} s"


def codegen_table(section: Results) -> list[str]:
    lines = [
        "codegen: wall time per run, median [min-max] over n interleaved rounds;",
        "ratio = variant / grpc, median of per-round ratios [min-max]",
        f"{'input':<44} {'variant':<16} {'n':>3} {'median':>10} {'min-max (ms)':>19} {'ratio':>22}",
    ]
    for entry in section["inputs"]:
        first = True
        for variant, spread in entry["seconds"].items():
            label = entry["input"] if first else ""
            first = False
            ratio = entry["ratios"].get(f"{variant}/grpc")
            shown = ""
            if ratio is not None:
                paired = ratio["paired"]
                shown = f"{paired['median']:.3f}x [{_range(paired, '.3f')}]"
            ms = {k: v * 1e3 for k, v in spread.items() if k != "n"}
            lines.append(
                f"{label:<44} {variant:<16} {spread['n']:>3} {_seconds(spread['median']):>10} "
                f"{_range(ms, '.2f'):>19} {shown:>22}"
            )
        for skipped in entry["skipped"]:
            lines.append(f"  skipped {skipped}")
        if not entry["inprocess_output_matches_plugin"]:
            lines.append("  WARNING: in-process output differs from the plugin's under protoc")
    return lines


def rpc_table(section: Results) -> list[str]:
    rounds = section["settings"]["rounds"]
    lines = [
        f"rpc: SayHello on one server; calls/s median [min-max] over {rounds} interleaved "
        "rounds of "
        f"{section['settings']['round_s']}s; p50/p99 over all calls; cpu = client process",
        "ratio = micro / raw calls/s: median [min-max] of per-round ratios; "
        "'of medians' = median micro / median raw; raw-control = raw on a second connection",
        f"{'mode':<6} {'c':>3} {'variant':<16} {'calls/s':>8} {'min-max':>13} {'p50 us':>8} "
        f"{'p99 us':>8} {'cpu us/call':>11} {'ratio':>6} {'min-max':>11} {'of medians':>10} "
        f"{'target':>12}",
    ]
    for result in section["results"]:
        first = True
        for name, stats in result["variants"].items():
            head = f"{result['mode']:<6} {result['concurrency']:>3}" if first else " " * 10
            first = False
            rate = stats["calls_per_s"]
            line = (
                f"{head} {name:<16} {rate['median']:>8.0f} {_range(rate, '.0f'):>13} "
                f"{stats['p50_us']:>8.0f} {stats['p99_us']:>8.0f} {stats['cpu_us_per_call']:>11.1f}"
            )
            ratio = result["ratios"].get(name)
            if ratio is not None:
                if ratio["control"]:
                    verdict = "A/A noise"
                else:
                    target = format(result["target"], ".2f")
                    verdict = f">={target} {'ok' if ratio['meets_target'] else 'BELOW'}"
                line += (
                    f" {ratio['calls_per_s']:>6.3f} "
                    f"{_range(ratio['calls_per_s_paired'], '.2f'):>11} "
                    f"{ratio['calls_per_s_of_medians']:>10.3f} "
                    f"{verdict:>12}"
                )
            lines.append(line)
    return lines


def table(results: Results) -> str:
    env = results["environment"]
    lines = [
        f"python {env['python']}  grpcio {env['grpcio']}  protobuf {env['protobuf']}  "
        f"cpus {env['cpus_usable']}/{env['cpu_count']}  load {env['load_average']}  "
        f"commit {str(env['git_commit'])[:10]}{' (dirty)' if env['git_dirty'] else ''}"
        f"{'  QUICK RUN' if results['quick'] else ''}",
    ]
    if "codegen" in results:
        lines += ["", *codegen_table(results["codegen"])]
    if "rpc" in results:
        lines += ["", *rpc_table(results["rpc"])]
    lines += ["", f"total {results['duration_s']:.1f}s"]
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(results, indent=1) + "\n")


# -- chart ----------------------------------------------------------------------


def _bars(
    ax: Axes, groups: list[str], series: dict[str, list[dict[str, float]]], scale: float = 1.0
) -> None:
    """Grouped bars of medians with min-max error bars, one series per variant."""
    width = 0.8 / max(len(series), 1)
    for i, (name, spreads) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        medians = [s["median"] * scale for s in spreads]
        below = [(s["median"] - s["min"]) * scale for s in spreads]
        above = [(s["max"] - s["median"]) * scale for s in spreads]
        ax.bar(xs, medians, width, yerr=[below, above], capsize=3, label=name)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.legend(fontsize=8)


def _codegen_chart(ax: Axes, section: Results) -> None:
    inputs = section["inputs"]
    groups = [e["input"].replace(" (", "\n(") for e in inputs]
    series = {v: [e["seconds"][v] for e in inputs] for v in section["variants"]}
    _bars(ax, groups, series, scale=1e3)
    ax.set_yscale("log")
    ax.set_ylabel("ms per run (log)")
    ax.set_title("codegen: protoc --micro_out vs --grpc_python_out")


def _rpc_chart(rate_ax: Axes, ratio_ax: Axes, section: Results) -> None:
    results = section["results"]
    groups = [f"{r['mode']} c={r['concurrency']}" for r in results]
    names = list(results[0]["variants"]) if results else []
    series = {n: [r["variants"][n]["calls_per_s"] for r in results] for n in names}
    _bars(rate_ax, groups, series)
    rate_ax.set_ylabel("calls/s")
    rate_ax.set_title("rpc: SayHello calls/s (median, min-max)")
    micro_names = [n for n in names if n != "raw"]
    width = 0.8 / max(len(micro_names), 1)
    for i, name in enumerate(micro_names):
        xs = [g + (i - (len(micro_names) - 1) / 2) * width for g in range(len(results))]
        paired = [r["ratios"][name]["calls_per_s_paired"] for r in results]
        medians = [p["median"] for p in paired]
        below = [p["median"] - p["min"] for p in paired]
        above = [p["max"] - p["median"] for p in paired]
        line = ratio_ax.errorbar(xs, medians, yerr=[below, above], fmt="o", capsize=4, label=name)
        colour = line[0].get_color()
        ratio_ax.vlines(xs, [p["q1"] for p in paired], [p["q3"] for p in paired], colour, lw=5)
        for x, median in zip(xs, medians, strict=True):
            ratio_ax.annotate(
                f"{median:.3f}",
                (x, median),
                xytext=(6, 0),
                fontsize=8,
                textcoords="offset points",
                va="center",
            )
    for g, result in enumerate(results):
        ratio_ax.hlines(result["target"], g - 0.4, g + 0.4, colors="red", linestyles="dashed")
    ratio_ax.axhline(1.0, color="grey", linewidth=0.8)
    ratio_ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ratio_ax.set_xlim(-0.5, len(groups) - 0.5)
    ratio_ax.set_ylabel("variant / raw calls/s")
    ratio_ax.set_title("rpc: micro/raw per round: median, IQR, min-max (red: target)")
    ratio_ax.legend(fontsize=8)


def write_png(results: Results, path: Path) -> None:
    panels = ("codegen" in results) + 2 * ("rpc" in results)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5), squeeze=False)
    row = list(axes[0])
    if "codegen" in results:
        _codegen_chart(row.pop(0), results["codegen"])
    if "rpc" in results:
        _rpc_chart(row[0], row[1], results["rpc"])
    env = results["environment"]
    fig.suptitle(
        f"micro-grpc bench - python {env['python']}, grpcio {env['grpcio']}, "
        f"{env['cpus_usable']} cpus{' (quick run)' if results['quick'] else ''}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
