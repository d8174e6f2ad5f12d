"""``micro run MODULE[:ATTR]``: serve a ``micro.Service`` until SIGTERM/SIGINT.

ATTR is a ``Service`` or a factory returning one (plain or ``async``); without it the
module's ``service`` or ``create_service`` is used. ``--reload`` runs the service in a
child process and restarts it, gracefully, when a ``.py`` file under the module's
directory changes (see watch.py).
``--workers N`` (``MICRO_WORKERS``) serves it from N processes: see supervisor.py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from micro.cli import common, output
from micro.cli.common import CliError
from micro.cli.supervisor import STOP_WAIT, Supervisor
from micro.cli.watch import POLL, changed, directory, snapshot
from micro.config import workers_option
from micro.service import Service

DEFAULT_ATTRS = ("service", "create_service")

EXAMPLES = """\
examples:
  micro run shop.main                        the module's `service` or `create_service`
  micro run shop.main:create_service --reload
  micro run shop.main --workers auto         a worker process per core, each its own node
  MICRO_SERVER_ADDRESS=0.0.0.0:9090 micro run app:service
The module is imported with the current directory first on sys.path.
"""


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "run",
        parents=[shared],
        help="run a service, stop it gracefully on SIGTERM/SIGINT",
        description="Import MODULE and serve its micro.Service (or the one its factory "
        "returns) until SIGTERM or SIGINT, then deregister, drain and stop.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="MODULE[:ATTR]")
    parser.add_argument(
        "--reload", action="store_true", help="restart when a .py file under the module changes"
    )
    parser.add_argument(
        "--workers",
        metavar="N|auto",
        type=_workers,
        help="serve from N processes, each its own node; auto: one per core (MICRO_WORKERS)",
    )
    # A worker of a supervisor: the file descriptor of its end of their socket pair.
    parser.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(run=_run, log_level="WARNING")


# The common flags the served service reads, as the variables they stand for.
FORWARDED = {
    "registry": "MICRO_REGISTRY",
    "registry_address": "MICRO_REGISTRY_ADDRESS",
    "broker": "MICRO_BROKER",
    "broker_address": "MICRO_BROKER_ADDRESS",
    "tls_cert": "MICRO_TLS_CERT",
    "tls_key": "MICRO_TLS_KEY",
    "tls_ca": "MICRO_TLS_CA",
    "token": "MICRO_AUTH_TOKEN",
}


def _workers(text: str) -> int:
    try:
        return workers_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _run(args: argparse.Namespace) -> int:
    config = common.config(args)  # a bad flag or variable fails here, before anything starts
    # The service reads its own config: flags reach it (and a reloaded child) as the
    # variables they override.
    for flag, variable in FORWARDED.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[variable] = value
    sys.path.insert(0, os.getcwd())
    if args.supervisor_fd is not None:
        return common.run(_serve(load(args.target), args.supervisor_fd))
    workers = config.workers if args.workers is None else args.workers
    if workers > 1:
        watch = directory(args.target.partition(":")[0]) if args.reload else None
        return Supervisor(args.target, workers, config=config, watch=watch).run()
    if args.reload:
        return Reloader(args).run()
    return common.run(_serve(load(args.target)))


def load(target: str) -> Any:
    """The object ``MODULE[:ATTR]`` names."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CliError(f"cannot import {module_name!r}: {e}") from None
    names = attr.split(".") if attr else [n for n in DEFAULT_ATTRS if hasattr(module, n)][:1]
    if not names:
        raise CliError(f"{module_name} has no `service` or `create_service`: name it, MODULE:ATTR")
    found: Any = module
    for name in names:
        try:
            found = getattr(found, name)
        except AttributeError:
            raise CliError(f"{module_name} has no attribute {attr!r}") from None
    return found


async def _serve(target: Any, supervisor_fd: int | None = None) -> int:
    # Signals are caught from the start: a SIGTERM while the service starts, or just
    # after it says it serves, still means a graceful stop, never a kill.
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    service = target
    if not isinstance(service, Service) and callable(service):
        service = service()
        if inspect.isawaitable(service):
            service = await service
    if not isinstance(service, Service):
        raise CliError(
            f"expected a micro.Service or a factory of one, got {type(service).__name__}"
        )
    await service.start()
    output.note(f"micro run: {service.name} serving on {service.address} as {service.id}")
    supervisor = None
    if supervisor_fd is not None:
        # Say where it serves and its grace; the supervisor's end closing (it stopped,
        # or died) is a stop.
        reader, supervisor = await asyncio.open_connection(sock=socket.socket(fileno=supervisor_fd))
        supervisor.write(f"{service.address} {service.id} {service.grace}\n".encode())
        orphaned = asyncio.ensure_future(reader.read())
        orphaned.add_done_callback(lambda _: stopping.set())
    try:
        await stopping.wait()
    finally:
        await service.stop()  # deregister, drain for its grace period, stop
        if supervisor is not None:
            supervisor.close()
    output.note(f"micro run: {service.id} stopped")
    return 0


class Reloader:
    """Runs ``micro run`` (without ``--reload``) as a child; restarts it when a watched
    file changes; on SIGTERM/SIGINT stops it and exits with its code."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.command = [sys.executable, "-m", "micro", "run", args.target]
        self.root = directory(args.target.partition(":")[0])
        self.stopping = False  # set by _stop

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        output.note(f"micro run: watching {self.root} for changes")
        while True:
            # Its own session: a terminal's Ctrl-C reaches only us, and we stop it once.
            # It holds one end of a socket pair as a supervised worker does: if we die
            # (SIGKILL, say), our end closes and it stops instead of serving on, orphaned.
            ours, theirs = socket.socketpair()
            with ours:
                with theirs:
                    child = subprocess.Popen(
                        [*self.command, f"--supervisor-fd={theirs.fileno()}"],
                        pass_fds=(theirs.fileno(),),
                        start_new_session=True,
                    )
                files = snapshot(self.root)
                path = self._wait(child, files)
                if path is None:  # asked to stop
                    return self._end(child)
                output.note(f"micro run: {path} changed, restarting")
                self._end(child)

    def _wait(self, child: subprocess.Popen[bytes], files: dict[Path, int]) -> Path | None:
        """Until a watched file changes (that file) or we are asked to stop (None)."""
        announced = False
        while not self.stopping:
            time.sleep(POLL)  # a signal handled meanwhile is seen within POLL
            if child.poll() is not None and not announced:
                output.note(f"micro run: exited with {child.returncode}, waiting for a change")
                announced = True
            path = changed(files, snapshot(self.root))
            if path is not None:
                return path
        return None

    def _end(self, child: subprocess.Popen[bytes]) -> int:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return child.returncode

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        # A plain flag, never a threading.Event: the handler runs between the main
        # thread's bytecodes, possibly inside Event.wait while it holds the Event's lock,
        # and Event.set would wait for that lock forever (seen: make run hung on SIGTERM).
        self.stopping = True
