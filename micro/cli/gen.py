"""``micro gen``: generate typed code from .proto files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from protoc_gen_micro.gen import GenError, generate

EXAMPLES = """\
examples:
  micro gen proto/                       every .proto under proto/, output in .
                                         (import root from each package: proto)
  micro gen -I proto --out gen proto/greeter/v1/greeter.proto
  micro gen --out src/app/api --package app.api proto/
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "gen",
        help="generate _pb2.py, _pb2.pyi and _micro.py from .proto files",
        description="Run protoc (from grpcio-tools) with the python, mypy and micro "
        "outputs. Well-known types and micro/options.proto are found automatically.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="FILES_OR_DIRS")
    parser.add_argument(
        "-I",
        "--proto-path",
        action="append",
        default=[],
        dest="includes",
        metavar="DIR",
        help="import root (repeatable); default: where each file's package path starts "
        "(proto/greeter/v1/greeter.proto of package greeter.v1: proto)",
    )
    parser.add_argument("--out", default=".", help="output directory (default: .)")
    parser.add_argument(
        "--package",
        metavar="PKG",
        help="make the output the importable package PKG: __init__.py files, "
        "relative imports between generated modules",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        written = generate(args.inputs, includes=args.includes, out=args.out, package=args.package)
    except GenError as e:
        print(f"micro gen: {e}", file=sys.stderr)
        return 1
    print(f"micro gen: wrote {len(written)} files to {args.out}")
    return 0
