"""The ``micro`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from micro.cli import gen


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="micro", description="micro-grpc: generate, run and call gRPC micro services."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gen.add_parser(commands)
    args = parser.parse_args(argv)
    sys.exit(args.run(args))
