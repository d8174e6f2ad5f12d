"""Results as a table (stdout) and JSON (bench/results.json); the chart is
``bench.chart``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Results = dict[str, Any]


def _range(spread: dict[str, float], fmt: str, scale: float = 1.0) -> str:
    return f"{spread['min'] * scale:{fmt}}-{spread['max'] * scale:{fmt}}"


def _seconds(value: float) -> str:
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.3f} s"


def _load(averages: list[float] | None) -> str:
    return "?" if averages is None else " ".join(f"{a:.2f}" for a in averages)


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else "ok" if ok else "BELOW"


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
            lines.append(
                f"{label:<44} {variant:<16} {spread['n']:>3} {_seconds(spread['median']):>10} "
                f"{_range(spread, '.2f', 1e3):>19} {shown:>22}"
            )
        for skipped in entry["skipped"]:
            lines.append(f"  skipped {skipped}")
        if not entry["inprocess_output_matches_plugin"]:
            lines.append("  WARNING: in-process output differs from the plugin's under protoc")
    return lines


def rpc_table(section: Results) -> list[str]:
    settings = section["settings"]
    lines = [
        f"rpc: one server; unary SayHello, stream LotsOfReplies ({section['stream_replies']} "
        f"messages per call); calls/s median [min-max] over {settings['rounds']} interleaved "
        f"rounds of {settings['round_s']}s; p50/p99 over all calls; cpu = client process",
        "ratio = variant / raw calls/s, median [min-max] of per-round ratios; +cpu (+p50, at "
        "c=1) = overhead per call vs raw in us: median of per-round differences;",
        "raw-control = raw on a second connection (A/A: the noise floor); grpclib = another "
        "asyncio client, for scale",
        f"{'mode':<5} {'shape':<6} {'c':>3} {'variant':<16} {'calls/s':>7} {'min-max':>11} "
        f"{'p50 us':>7} {'p99 us':>7} {'cpu us':>7} {'ratio':>6} {'min-max':>9} "
        f"{'+cpu us':>7} {'+p50 us':>7} {'target':>10}",
    ]
    for result in section["results"]:
        first = True
        for name, stats in result["variants"].items():
            head = f"{result['mode']:<5} {result['shape']:<6} {result['concurrency']:>3}"
            head = head if first else " " * len(head)
            first = False
            rate = stats["calls_per_s"]
            line = (
                f"{head} {name:<16} {rate['median']:>7.0f} {_range(rate, '.0f'):>11} "
                f"{stats['p50_us']:>7.0f} {stats['p99_us']:>7.0f} {stats['cpu_us_per_call']:>7.1f}"
            )
            ratio = result["ratios"].get(name)
            if ratio is not None:
                if ratio["kind"] == "control":
                    verdict = "A/A noise"
                elif ratio["kind"] == "peer":
                    verdict = "peer"
                else:
                    verdict = f">={result['target']:.2f} {_verdict(ratio['meets_target'])}"
                # Above one call in flight, p50 is mostly queueing: its difference is noise.
                p50 = ratio["overhead_p50_us"]["median"] if result["concurrency"] == 1 else None
                line += (
                    f" {ratio['calls_per_s']:>6.3f} {_range(ratio['calls_per_s_paired'], '.2f'):>9}"
                    f" {ratio['overhead_cpu_us']['median']:>7.1f}"
                    f" {'' if p50 is None else format(p50, '.1f'):>7} {verdict:>10}"
                )
            lines.append(line)
    return lines


def overload_table(section: Results) -> list[str]:
    lines = [
        f"overload: {section['in_flight']} calls in flight on one server whose handler awaits "
        f"{section['wait_ms']} ms, raw grpc.aio client (one attempt per call); latency of the "
        "calls served",
        f"{'server':<16} {'calls':>8} {'p50 ms':>8} {'p99 ms':>8} {'refused':>8} "
        f"{'cancelled':>9}  other",
    ]
    for name, v in section["variants"].items():
        p50, p99 = (f"{v[k]:.1f}" if v[k] is not None else "-" for k in ("p50_ms", "p99_ms"))
        lines.append(
            f"{name:<16} {v['calls']:>8} {p50:>8} {p99:>8} {v['refused_share']:>8.1%} "
            f"{v['cancelled_share']:>9.1%}  {v['other_failures'] or ''}"
        )
    return lines


def scale_table(section: Results) -> list[str]:
    lines = [
        "scale: async SayHello over N server processes; micro-discovered (registry, "
        "least_request) vs grpc's round_robin channel over the same addresses;",
        "balance = max/min calls per instance (1.00 is even)",
        f"{'servers':>7} {'variant':<16} {'calls/s':>7} {'min-max':>11} {'p50 us':>7} "
        f"{'p99 us':>7} {'ratio':>6} {'min-max':>9} {'balance':>7}",
    ]
    for result in section["servers"]:
        first = True
        for name, stats in result["variants"].items():
            head = f"{result['servers']:>7}" if first else " " * 7
            first = False
            rate = stats["calls_per_s"]
            spread = result["balance"][name]["max_over_min"]
            line = (
                f"{head} {name:<16} {rate['median']:>7.0f} {_range(rate, '.0f'):>11} "
                f"{stats['p50_us']:>7.0f} {stats['p99_us']:>7.0f}"
            )
            ratio = result["ratios"].get(name)
            line += (
                f" {ratio['calls_per_s']:>6.3f} {_range(ratio['calls_per_s_paired'], '.2f'):>9}"
                if ratio
                else " " * 17
            )
            line += f" {spread:>7.2f}" if spread is not None else f" {'-':>7}"
            lines.append(line)
    selection = section["selection"]
    lines += [
        "selection: time a call spends choosing its node (route lookup, retry plan, pick), "
        "by nodes registered; ratio to the fewest, per round",
        f"{'nodes':>7} {'ns/call':>9} {'min-max':>17} {'ratio':>8} {'route build ms':>14}",
    ]
    for nodes, spread in selection["ns_per_selection"].items():
        ratio = selection["ratio_to_fewest"].get(nodes)
        shown = f"{ratio['median']:>8.2f}" if ratio else f"{'1':>8}"
        lines.append(
            f"{nodes:>7} {spread['median']:>9.0f} {_range(spread, '.0f'):>17} {shown} "
            f"{selection['route_build_ms'][nodes]:>14.2f}"
        )
    lines.append(
        f"flat (largest <= {selection['flat_target']}x the fewest): "
        f"{'ok' if selection['flat'] else 'NO'}"
    )
    return lines


def workers_table(section: Results) -> list[str]:
    settings = section["settings"]
    raw = section["raw_calls_per_s"]
    lines = [
        f"workers: async SayHello to one service run with `micro run --workers N` (loopback "
        f"mDNS); {settings['clients']} client processes x {settings['concurrency']} in flight; "
        f"calls/s median [min-max] over {settings['rounds']} interleaved rounds of "
        f"{settings['round_s']}s",
        "x one = calls/s / one worker's, per round (scaling); efficiency = x one / N, goal "
        f">= {section['goal']}; x raw = / raw grpc.aio, one server process, plain channels "
        f"({raw['median']:.0f} calls/s)",
        f"{'workers':>7} {'calls/s':>7} {'min-max':>13} {'x one':>6} {'min-max':>11} "
        f"{'efficiency':>10} {'x raw':>6}",
    ]
    for result in section["results"]:
        rate, one = result["calls_per_s"], result["ratio_to_one"]
        lines.append(
            f"{result['workers']:>7} {rate['median']:>7.0f} {_range(rate, '.0f'):>13} "
            f"{one['median']:>6.2f} {_range(one, '.2f'):>11} {result['efficiency']:>10.2f} "
            f"{result['ratio_to_raw']['median']:>6.2f}"
        )
    return lines


def registry_table(section: Results) -> list[str]:
    lookups = section["lookups"]
    lines = [
        "registry lookups: CachingRegistry over MemoryRegistry, vs a plain dict.get, "
        f"interleaved; target >= {lookups['target_per_s']:,}/s",
        f"{'way':<12} {'lookups/s':>12} {'min-max':>23} {'vs dict':>8} {'target':>7}",
    ]
    for name, spread in lookups["lookups_per_s"].items():
        ratio = lookups["ratio_to_dict"].get(name)
        lines.append(
            f"{name:<12} {spread['median']:>12,.0f} {_range(spread, ',.0f'):>23} "
            f"{ratio['median'] if ratio else 1:>8.3f} "
            f"{_verdict(lookups['meets_target'].get(name)):>7}"
        )
    failover = section["failover"]
    last = failover["last_attempt_ms"]
    sent = failover["attempts_to_dead_node"]
    lines += [
        f"failover: kill -9 of 1 of 3 instances under load, {last['n']} times; last attempt "
        f"sent to the dead node {last['median']:.1f} ms after the kill [{_range(last, '.1f')}]; "
        f"{sent['median']:.0f} attempts [{_range(sent, '.0f')}]; "
        f"{failover['failed_calls']} calls failed for the caller",
        f"  (0 ms: no attempt after the kill; window {failover['window_s']}s after the kill; "
        f"an ejected node is probed again after {failover['ejection_s']}s; its registry entry "
        "never expired)",
    ]
    return lines


def broker_table(section: Results) -> list[str]:
    lines = [
        "broker: publish -> handle, micro (typed, envelope) vs the backend's own client; "
        f"interleaved rounds; ratio = micro/raw msgs/s per round; target >= {section['target']}",
        f"{'backend':<20} {'msgs/run':>8} {'side':<5} {'msgs/s':>8} {'min-max':>15} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'ratio':>6} {'min-max':>9} {'target':>6}",
    ]
    if not section["results"]:
        lines.append("  no backend modules (bench/broker_<name>.py)")
    for result in section["results"]:
        if result["status"] != "ok":
            lines.append(f"{result['variant']:<20} {result['status']}: {result['reason']}")
            continue
        for side, stats in result["sides"].items():
            rate = stats["msgs_per_s"]
            head = f"{result['variant']:<20} {result['messages_per_run']:>8}"
            line = (
                f"{head if side == 'micro' else ' ' * len(head)} {side:<5} "
                f"{rate['median']:>8.0f} {_range(rate, '.0f'):>15} {stats['p50_ms']:>7.2f} "
                f"{stats['p99_ms']:>7.2f}"
            )
            if side == "micro":
                ratio = result["ratio"]
                line += (
                    f" {ratio['median']:>6.3f} {_range(ratio, '.2f'):>9} "
                    f"{_verdict(result['meets_target']):>6}"
                )
            lines.append(line)
    return lines


def secure_table(section: Results) -> list[str]:
    lines = [
        "secure: async unary SayHello; raw = grpc.aio, -tls = mutual TLS with a bearer",
        "token (ES256) verified by the server on every call; ratio = calls/s, median of",
        "per-round ratios [min-max]; overhead = extra p50 latency per call (us)",
        f"{'conc':>5} {'pair':<20} {'ratio':>7} {'min-max':>12} {'+p50 us':>9}",
    ]
    for entry in section["results"]:
        for pair, ratio in entry["ratios"].items():
            paired, p50 = ratio["calls_per_s_paired"], ratio["overhead_p50_us"]
            lines.append(
                f"{entry['concurrency']:>5} {pair:<20} {paired['median']:>7.3f} "
                f"{_range(paired, '.2f'):>12} {p50['median']:>9.1f}"
            )
    return lines


def gateway_table(section: Results) -> list[str]:
    lines = [
        "gateway: unary JSON over HTTP (micro api's app) vs micro's client direct (gRPC) "
        "and vs a hand-written Starlette endpoint (the floor)",
        f"{'conc':>4}  {'variant':<13} {'calls/s':>9} {'p50 us':>8} {'p99 us':>8}  ratio",
    ]
    for row in section["results"]:
        for name, stats in row["variants"].items():
            ratio = ""
            if name == "gateway":
                ratio = (
                    f"{row['gateway_vs_direct']['calls_per_s']:.2f}x direct, "
                    f"{row['gateway_vs_floor']['calls_per_s']:.2f}x floor"
                )
            lines.append(
                f"{row['concurrency']:>4}  {name:<13} {stats['calls_per_s']['median']:>9.0f} "
                f"{stats['p50_us']:>8.0f} {stats['p99_us']:>8.0f}  {ratio}"
            )
    return lines


def observe_table(section: Results) -> list[str]:
    settings = section["settings"]
    lines = [
        "observe: client and server in one process, async unary; cpu = both sides per call; "
        f"{settings['rounds']} interleaved rounds of {settings['round_s']}s",
        "+cpu = added cpu us per call, median of per-round differences: the OTel "
        "instrumentation over raw grpc.aio, micro's Tracing+Metrics over plain micro (idle: "
        "no provider set yet);",
        f"ratio = micro's added / the instrumentation's added (goal <= {section['goal']})",
        f"{'c':>3} {'variant':<26} {'calls/s':>7} {'cpu us':>7} {'+cpu us':>8} {'ratio':>6}",
    ]
    for result in section["results"]:
        added = {
            "raw+otel-instrumentation": result["instrumentation_vs_raw"],
            "micro": result["micro_vs_raw"],
            **result["parts_vs_micro"],
            "micro+observe": result["observe_vs_micro"],
        }
        for name, stats in result["variants"].items():
            line = (
                f"{result['concurrency']:>3} {name:<26} {stats['calls_per_s']['median']:>7.0f} "
                f"{stats['cpu_us_per_call']:>7.1f}"
            )
            if name in added:
                line += f" {added[name]['overhead_cpu_us']['median']:>8.1f}"
            if name == "micro+observe" and result["added_cpu_ratio"] is not None:
                verdict = "ok" if result["meets_goal"] else "OVER"
                line += f" {result['added_cpu_ratio']:>6.2f} {verdict}"
            lines.append(line)
    return lines


TABLES = {
    "codegen": codegen_table,
    "rpc": rpc_table,
    "overload": overload_table,
    "scale": scale_table,
    "workers": workers_table,
    "registry": registry_table,
    "broker": broker_table,
    "secure": secure_table,
    "observe": observe_table,
    "gateway": gateway_table,
}


def table(results: Results) -> str:
    env = results["environment"]
    lines = [
        f"python {env['python']}  grpcio {env['grpcio']}  protobuf {env['protobuf']}  "
        f"cpus {env['cpus_usable']}/{env['cpu_count']}  load {_load(env['load_average'])}  "
        f"commit {str(env['git_commit'])[:10]}{' (dirty)' if env['git_dirty'] else ''}"
        f"{'  QUICK RUN' if results['quick'] else ''}",
    ]
    for name, render in TABLES.items():
        if name in results:
            lines += ["", *render(results[name])]
    lines += ["", f"total {results['duration_s']:.1f}s"]
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(results, indent=1) + "\n")
