"""``micro run MODULE --workers N``: one service served by N processes, each its own node.

One Python process serves on about one core (the GIL). The supervisor starts N
workers, each ``micro run MODULE`` in a fresh interpreter (grpc is not fork-safe), each
on its own port and registered as its own node: callers balance over them as over any
instances, through the registry; queue subscriptions split messages among them as
among separate instances. It is its own module because it owns processes, where
run.py owns one service in this process.

Each worker holds one end of a socket pair to the supervisor: on it the worker says
where it serves once it has started, and its grace (how long its stop may take, after
which it is killed), and it stops gracefully when the other end closes, so a
supervisor that is killed leaves no workers behind.

- A worker that exits before it serves (bad module, port in use) stops the whole with
  its error: the module is imported in one worker first, so a bad one fails once.
- A worker that dies later is restarted on the same port after a backoff that doubles
  with each death in a row; one that served STABLE seconds starts the count again.
- SIGTERM/SIGINT: every worker stops gracefully (deregister, drain), exit 0.
- SIGHUP (and, with ``--reload``, a changed ``.py`` file): workers are replaced one at a
  time, each new one serving before the old one stops, so no call fails. A fixed port
  cannot be bound twice: there the old one stops first while the others serve.

A fixed port P (``MICRO_SERVER_ADDRESS=host:P``) gives worker i the port P+i, and an
advertised port A (``MICRO_SERVER_ADVERTISE``) A+i; port 0 lets each pick its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micro.cli import output, watch
from micro.cli.common import CliError
from micro.config import Config, host_port

START_WAIT = 60.0  # seconds a worker may take to import its module and start serving
STOP_WAIT = 35.0  # seconds a process whose grace is unknown gets to stop (the default is 30 s)
STOP_MARGIN = 5.0  # seconds past a worker's grace before it is killed: its last steps
FIRST_BACKOFF = 0.5  # seconds before restarting a worker that died; doubles per death in a row
MAX_BACKOFF = 30.0
STABLE = 10.0  # seconds of serving after which a death is no longer "in a row"


def status(code: int) -> str:
    """A process's exit as people read it: ``exit status 3``, ``signal SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit status {code}"


@dataclass(eq=False)
class Worker:
    """One worker process: its slot (0 … N-1), where it serves and since when."""

    slot: int
    process: asyncio.subprocess.Process
    channel: asyncio.StreamWriter  # the supervisor's end; closing it stops the worker
    address: str = ""
    id: str = ""
    since: float = field(default_factory=time.monotonic)
    grace: float = STOP_WAIT - STOP_MARGIN  # its service's, once it serves
    reaper: asyncio.Future[None] | None = None  # says when it exits

    def __str__(self) -> str:
        return f"worker {self.slot} (pid {self.process.pid}{', ' + self.id if self.id else ''})"


class Supervisor:
    """Runs ``workers`` processes of ``micro run TARGET`` until SIGTERM/SIGINT.

    From code, as ``micro run app:create_service --workers 4`` does::

        sys.exit(Supervisor("app:create_service", 4).run())

    TARGET must be importable by name in a fresh interpreter (the current directory is
    first on its path). ``watch``: a directory whose ``.py`` changes replace the workers.
    """

    def __init__(
        self,
        target: str,
        workers: int,
        *,
        config: Config | None = None,
        watch: Path | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: at least one")
        self.target = target
        self.count = workers
        self.config = config or Config.from_env()
        # Each worker would have its own: callers could not find them, nor they share messages.
        if self.config.registry == "memory":
            raise CliError(
                f"--workers {workers} with registry memory (MICRO_REGISTRY): no caller could "
                "find the workers, each would register in its own; use mdns, etcd or nats"
            )
        if self.config.broker == "memory":
            raise CliError(
                f"--workers {workers} with broker memory (MICRO_BROKER): the workers would not "
                "share messages, each would have its own; use grpc, nats, redis or rabbitmq"
            )
        self.watch = watch
        self.workers: dict[int, Worker] = {}  # serving, by slot
        self.processes: set[asyncio.subprocess.Process] = set()  # every one not yet reaped
        self.deaths = [0] * workers  # in a row, by slot
        self.events: asyncio.Queue[str | Worker] = asyncio.Queue()  # "stop", "replace", a death

    def run(self) -> int:
        """Supervise on a new event loop; the exit code."""
        return asyncio.run(self.supervise())

    async def supervise(self) -> int:
        loop = asyncio.get_running_loop()
        signals = {signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGHUP: "replace"}
        for sig, event in signals.items():
            loop.add_signal_handler(sig, self.events.put_nowait, event)
        watching = asyncio.ensure_future(self._watch()) if self.watch else None
        try:
            if await self._until_stopped(self._start_all()):
                output.note(
                    f"micro run: {self.count} workers serving (pids "
                    f"{', '.join(str(w.process.pid) for w in self.workers.values())}); "
                    "SIGHUP replaces them one at a time"
                )
                await self._serve()
        finally:
            if watching is not None:
                watching.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)
            code = await self._stop_all()
        return code

    async def _serve(self) -> None:
        """Handle events until asked to stop."""
        while True:
            event = await self.events.get()
            if event == "stop":
                return
            if event == "replace":
                work = self._replace_all()
            elif isinstance(event, Worker) and self.workers.get(event.slot) is event:
                work = self._restart(event)
            else:  # a worker the supervisor stopped itself
                continue
            if not await self._until_stopped(work):
                return

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` unless a stop comes first; False if one did. Other events
        meanwhile (deaths, a replace) are handled after it, a replace once."""
        task = asyncio.ensure_future(work)
        later: list[str | Worker] = []
        try:
            while not task.done():
                getting = asyncio.ensure_future(self.events.get())
                await asyncio.wait({task, getting}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                elif getting.result() == "stop":
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return False
                elif getting.result() not in later:
                    later.append(getting.result())
        finally:
            for event in later:
                self.events.put_nowait(event)
        task.result()  # its error, if any
        return True

    async def _start_all(self) -> None:
        # One first: a module that cannot be imported fails once, not N times.
        self.workers[0] = await self._start(0)
        started = await asyncio.gather(
            *(self._start(slot) for slot in range(1, self.count)), return_exceptions=True
        )
        for found in started:
            if isinstance(found, Worker):
                self.workers[found.slot] = found
        for found in started:
            if isinstance(found, BaseException):
                raise found

    async def _start(self, slot: int) -> Worker:
        """A new worker in ``slot``, serving; CliError if it exits (or hangs) first."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "micro", "run", self.target,
                f"--supervisor-fd={theirs.fileno()}",
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
                env=self._environment(slot),
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.processes.add(process)
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = Worker(slot, process, writer)
        try:
            line = await asyncio.wait_for(reader.readline(), START_WAIT)
        except asyncio.TimeoutError:
            await self._end(worker)
            raise CliError(f"{worker} did not serve within {START_WAIT:.0f} s: stopping") from None
        except BaseException:  # a stop while it starts: _stop_all ends the process
            writer.close()
            raise
        if not line:
            code = await process.wait()
            writer.close()
            raise CliError(f"{worker} exited with {status(code)} before serving: stopping")
        worker.address, worker.id, grace = line.decode().split()
        worker.grace = float(grace)
        worker.reaper = asyncio.ensure_future(self._reap(worker))
        return worker

    def _environment(self, slot: int) -> dict[str, str]:
        """The worker's variables: the supervisor's, with its own ports when fixed."""
        env = dict(os.environ)
        env["MICRO_WORKERS"] = "1"  # the worker serves; it does not supervise
        host, _, port = self.config.server_address.rpartition(":")
        if int(port):
            env["MICRO_SERVER_ADDRESS"] = f"{host}:{int(port) + slot}"
        if self.config.server_advertise is not None:
            advertised, given = host_port(self.config.server_advertise)
            if given is not None:
                env["MICRO_SERVER_ADVERTISE"] = f"{advertised}:{given + slot}"
        return env

    @property
    def fixed_port(self) -> bool:
        return self.config.server_address.rpartition(":")[2] != "0"

    async def _reap(self, worker: Worker) -> None:
        """Report the worker's exit: a death unless the supervisor stopped it."""
        await worker.process.wait()
        self.processes.discard(worker.process)
        worker.channel.close()
        self.events.put_nowait(worker)

    async def _restart(self, dead: Worker) -> None:
        code = dead.process.returncode
        assert code is not None
        if time.monotonic() - dead.since >= STABLE:
            self.deaths[dead.slot] = 0
        self.deaths[dead.slot] += 1
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (self.deaths[dead.slot] - 1))
        output.note(f"micro run: {dead} exited with {status(code)}; restarting in {delay:g} s")
        del self.workers[dead.slot]
        await asyncio.sleep(delay)
        self.workers[dead.slot] = await self._start(dead.slot)

    async def _replace_all(self) -> None:
        output.note(f"micro run: replacing {self.count} workers one at a time")
        for slot in range(self.count):
            old = self.workers.pop(slot, None)
            if old is not None and self.fixed_port:
                await self._end(old)  # its port is free only once it has stopped
            self.workers[slot] = await self._start(slot)
            if old is not None and not self.fixed_port:
                await self._end(old)
        output.note("micro run: every worker replaced")

    async def _end(self, worker: Worker) -> int:
        """Stop a worker gracefully (killed past its grace); its exit code."""
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(worker.process.wait(), worker.grace + STOP_MARGIN)
        except asyncio.TimeoutError:
            output.note(f"micro run: {worker} still stopping past its grace: killed")
            worker.process.kill()
            code = await worker.process.wait()
        worker.channel.close()
        self.processes.discard(worker.process)
        return code

    async def _stop_all(self) -> int:
        """Stop every worker, serving or starting, at once; 0 if each stopped cleanly."""
        starting = self.processes - {w.process for w in self.workers.values()}
        for process in starting:  # interrupted before it said where it serves
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(self._end(w) for w in self.workers.values()))
        for process in starting:
            try:
                await asyncio.wait_for(process.wait(), STOP_WAIT)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        self.workers.clear()
        failed = [code for code in codes if code != 0]
        if failed:
            output.note(f"micro run: {len(failed)} worker(s) did not stop cleanly")
        return 1 if failed else 0

    async def _watch(self) -> None:
        """Replace the workers when a watched file changes (``--reload``)."""
        assert self.watch is not None
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(None, watch.snapshot, self.watch)
        while True:
            await asyncio.sleep(watch.POLL)
            now = await loop.run_in_executor(None, watch.snapshot, self.watch)
            path = watch.changed(files, now)
            if path is not None:
                output.note(f"micro run: {path} changed, replacing the workers")
                files = now
                self.events.put_nowait("replace")
