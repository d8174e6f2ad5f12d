"""``python -m bench [SECTION ...] [--quick]``: run, print, write the results."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    broker,
    chart,
    codegen,
    environment,
    gateway,
    observe,
    overload,
    registry,
    report,
    rpc,
    scale,
    secure,
    workers,
)

SECTIONS: dict[str, Callable[[bool, Callable[[str], None]], dict[str, Any]]] = {
    "codegen": codegen.run,
    "rpc": rpc.run,
    "overload": overload.run,
    "scale": scale.run,
    "workers": workers.run,
    "registry": registry.run,
    "broker": broker.run,
    "secure": secure.run,
    "observe": observe.run,
    "gateway": gateway.run,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="micro-grpc benchmarks: each figure against its baseline, same run.",
    )
    parser.add_argument(
        "sections", nargs="*", metavar="SECTION", help=f"{' and/or '.join(SECTIONS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (few rounds)")
    parser.add_argument(
        "--out", type=Path, default=environment.BENCH, help="directory for results.json/.png"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    chosen = list(dict.fromkeys(args.sections)) or list(SECTIONS)

    started = time.perf_counter()
    results: dict[str, Any] = {"environment": environment.describe(), "quick": args.quick}
    for name in chosen:
        results[name] = SECTIONS[name](args.quick, log)
    results["duration_s"] = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, args.out / "results.json")
    chart.write_png(results, args.out / "results.png")
    print(report.table(results))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
