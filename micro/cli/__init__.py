"""The ``micro`` command: generate, scaffold, run, inspect and call services.

Every subcommand reads the same configuration as the runtime (``MICRO_*`` variables,
overridden by ``--registry``/``--broker`` flags). ``main`` is the one place errors
become output: a single line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from micro import errors
from micro.broker import BrokerError
from micro.cli import api, call, common, completion, gen, health, new, pubsub, registry
from micro.cli import run as run_command
from micro.cli.common import CliError
from micro.config import ConfigError
from micro.reflection import ReflectionError
from micro.registry import RegistryError

EXAMPLES = """\
examples:
  micro new shop && cd shop && make test           scaffold a service project
  micro run shop.main --reload                     serve it, restart on source changes
  micro services                                   what the registry knows
  micro call shop Shop.Hello '{"name": "Ada"}'     call a method (types from reflection)
  micro stream shop Shop.Countdown '{"start": 3}'  replies as they arrive
  micro api                                        every service over HTTP/JSON, docs at /docs
  micro completion bash > ~/.micro-complete        shell completion (see micro completion -h)

Run `micro COMMAND --help` for a command's options and examples.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too (argparse prints the whole usage), exit code 2
    as argparse's; subcommands' parsers are of this class as well."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="micro",
        description="micro-grpc: generate, run and call gRPC micro services.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = common.options()
    gen.add_parser(commands)
    new.add_parser(commands)
    run_command.add_parser(commands, shared)
    registry.add_parsers(commands, shared)
    health.add_parser(commands, shared)
    call.add_parsers(commands, shared)
    pubsub.add_parsers(commands, shared)
    api.add_parser(commands, shared)
    completion.add_parser(commands, top)
    for command in commands.choices.values():
        command.set_defaults(command_parser=command)
    top.set_defaults(log_level="CRITICAL")  # `micro run` shows its service's warnings
    return top


def main(argv: Sequence[str] | None = None) -> None:
    top = parser()
    args, unknown = top.parse_known_args(argv)
    if unknown:  # said by the command's parser, which knows its own --help
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # Library warnings (a registry retrying, say) would break the one-line contract;
    # MICRO_LOG_LEVEL shows them when wanted.
    level = os.environ.get("MICRO_LOG_LEVEL", "").upper() or args.log_level
    logging.basicConfig(level=getattr(logging, level, logging.CRITICAL), format="%(message)s")
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        code = 130
    except (
        CliError,
        ReflectionError,
        errors.Error,
        RegistryError,
        BrokerError,
        ConfigError,
        OSError,
    ) as e:
        code = _fail(args.command, str(e))
    except Exception as e:  # a bug: still one line, naming the exception type
        code = _fail(args.command, f"unexpected {type(e).__name__}: {e}")
    sys.exit(code)


def _fail(command: str, message: str) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"micro {command}: {first}", file=sys.stderr)
    return 1
