"""``micro run --workers N``: N processes, each its own node on the loopback mDNS
registry. Every worker serves; a killed one is restarted; SIGTERM drains them all with
no failed call; SIGHUP replaces them one at a time with no failed call; a queue
subscription's messages are handled once across them; a worker that cannot start
stops the whole with its error."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import random
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_support import Running, micro, unique
from google.protobuf.wrappers_pb2 import Int64Value
from registry_support import loopback_multicast
from runtime_support import GEN  # first: it generates echo.proto and puts it on the path

import echo_micro  # isort: skip
import echo_pb2  # isort: skip
from echo_node import HOLD  # isort: skip

import micro as micro_grpc
from micro.cli.supervisor import Supervisor, status
from micro.config import Config, ConfigError

HERE = Path(__file__).parent
PATH = os.pathsep.join(str(p) for p in (HERE, HERE.parent / "support", GEN))
SERVING = r"micro run: \S+ serving on \S+ as (\S+)"
# Generous for a loaded 2-core machine: a worker imports grpc and its module, starts,
# and announces itself in a few seconds when it has a core.
START = 90.0
STOP = 60.0  # a worker drains within its grace (worker_app.GRACE), mostly far sooner
WORKERS = 2
MDNS = Config(registry="mdns")

pytestmark = [pytest.mark.backend, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def multicast() -> None:
    """Skips (a failure in CI) without loopback multicast, which mDNS needs."""
    problem = loopback_multicast()
    if problem is not None:
        pytest.skip(problem)


class Workers:
    """``micro run worker_app --workers 2`` as service ``name``: its serving ids and pids."""

    def __init__(self, name: str, **env: str) -> None:
        self.name = name
        self.running = Running(
            "run", "worker_app", "--workers", str(WORKERS), cwd=HERE,
            PYTHONPATH=PATH, WORKERS_TEST_SERVICE=name, **env,
        )  # fmt: skip
        self.ids = [self.running.wait_for(SERVING, START)[1] for _ in range(WORKERS)]
        found = self.running.wait_for(r"(\d+) workers serving \(pids ([\d, ]+)\)", START)
        self.pids = [int(pid) for pid in found[2].split(", ")]

    async def wait_for(self, pattern: str, timeout: float = START) -> re.Match[str]:
        """The next stderr line matching ``pattern`` (read on a thread: the loop runs on)."""
        return await asyncio.to_thread(self.running.wait_for, pattern, timeout)

    def lines(self) -> list[str]:
        """Every stderr line, once the process has ended."""
        while not self.running.errors.empty():
            self.running.seen.append(self.running.errors.get())
        return self.running.seen


@pytest.fixture
def workers(multicast: None) -> Iterator[Callable[..., Workers]]:
    """Starts ``Workers`` (of a new service, ``env`` added to their environment);
    any still running at the end are stopped."""
    started: list[Workers] = []

    def start(**env: str) -> Workers:
        started.append(Workers(unique("workers"), **env))
        return started[-1]

    yield start
    for running in started:
        running.running.stop(STOP)


class Load:
    """Calls (Get and Put in turn) from ``callers`` tasks until stopped, at most
    ``limit`` each; outcomes by status code and answers by node."""

    def __init__(self, echo: echo_micro.EchoClient, callers: int = 8, limit: int = 5000) -> None:
        self.echo = echo
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.nodes: collections.Counter[str] = collections.Counter()
        self.stopping = False
        self.answered = asyncio.Event()  # set at each call's end
        self.tasks = [asyncio.ensure_future(self._call(i, limit)) for i in range(callers)]

    async def _call(self, caller: int, limit: int) -> None:
        request = echo_pb2.EchoRequest(sleep=0.01)
        for i in range(limit):
            if self.stopping:
                return
            method = self.echo.put if (caller + i) % 2 else self.echo.get
            try:
                self.nodes[(await method(request, timeout=30)).node] += 1
                self.outcomes["OK"] += 1
            except micro_grpc.errors.Error as e:
                self.outcomes[e.code.name] += 1
            finally:
                self.answered.set()

    async def until(self, nodes: set[str], calls: int = 20) -> None:
        """Until each of ``nodes`` has answered ``calls`` calls (bounded by ``limit``)."""
        while not all(self.nodes[n] >= calls for n in nodes):
            assert not all(t.done() for t in self.tasks), f"load ended: {self.nodes}"
            self.answered.clear()
            # Bounded by a call's timeout: some call has ended by then.
            await asyncio.wait_for(self.answered.wait(), 30)

    async def stop(self) -> collections.Counter[str]:
        self.stopping = True
        await asyncio.gather(*self.tasks)
        return self.outcomes


async def test_every_worker_serves_and_sigterm_drains_them_with_no_failed_call(
    workers: Callable[..., Workers],
) -> None:
    started = workers()
    async with micro_grpc.Client(config=MDNS) as client:
        echo = echo_micro.EchoClient(started.name, client)
        load = Load(echo)
        await load.until(set(started.ids))  # every worker is found and serves
        # Calls held in the handlers, on whichever workers: in flight through the stop.
        held = [
            asyncio.ensure_future(echo.get(echo_pb2.EchoRequest(text=HOLD, sleep=0.5), timeout=60))
            for _ in range(4)
        ]
        for _ in held:
            await started.wait_for(r"^held ")
        started.running.process.send_signal(signal.SIGTERM)
        outcomes = await load.stop()  # what was in flight at the signal ends
        answers = await asyncio.gather(*held)
    code, _ = started.running.finish(STOP)
    assert code == 0
    assert set(outcomes) == {"OK"}, outcomes
    assert {a.node for a in answers} <= set(started.ids)
    said = [re.match(r"micro run: (\S+) stopped", line) for line in started.lines()]
    stopped = {m[1] for m in said if m}
    assert stopped == set(started.ids)


async def test_a_killed_worker_is_restarted(workers: Callable[..., Workers]) -> None:
    started = workers()
    os.kill(started.pids[0], signal.SIGKILL)
    died = await started.wait_for(
        rf"micro run: worker (\d) \(pid {started.pids[0]}, (\S+)\) exited with signal "
        r"SIGKILL; restarting in 0\.5 s"
    )
    assert died[2] in started.ids
    replacement = (await started.wait_for(SERVING))[1]
    async with micro_grpc.Client(config=MDNS) as client:
        load = Load(echo_micro.EchoClient(started.name, client))
        alive = set(started.ids) - {died[2]} | {replacement}
        await load.until(alive)
        await load.stop()
    code, _ = started.running.stop(STOP)
    assert code == 0


def free_pair() -> int:
    """A loopback port P such that P and P+1 were free just now, below the ephemeral
    range: ports bound to 0 and outgoing connections, which every other test uses,
    never take it in the meantime."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        low = 32768  # Linux's default
    for _ in range(100):
        port = random.randrange(max(1024, low - 10_000), low - 1)
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError(f"no two consecutive free ports on 127.0.0.1 below {low}")


@pytest.mark.parametrize("fixed", [False, True], ids=["port-0", "fixed-ports"])
async def test_sighup_replaces_workers_one_at_a_time_with_no_failed_call(
    workers: Callable[..., Workers], fixed: bool
) -> None:
    base = free_pair() if fixed else 0
    started = workers(MICRO_SERVER_ADDRESS=f"127.0.0.1:{base}")
    async with micro_grpc.Client(config=MDNS) as client:
        load = Load(echo_micro.EchoClient(started.name, client))
        await load.until(set(started.ids))
        started.running.process.send_signal(signal.SIGHUP)
        await started.wait_for("micro run: replacing 2 workers one at a time")
        events = [(await started.wait_for(r"micro run: (.+)"))[1] for _ in range(5)]
        serving = [m for e in events if (m := re.match(r"\S+ serving on (\S+) as (\S+)", e))]
        # Slot by slot, the new one serves before the old one stops; a fixed port is
        # free only once the old one has stopped.
        slots = [[m[0], f"{old} stopped"] for m, old in zip(serving, started.ids, strict=True)]
        if fixed:
            slots = [slot[::-1] for slot in slots]
            assert [m[1] for m in serving] == [f"127.0.0.1:{base + i}" for i in range(WORKERS)]
        assert events == [*itertools.chain(*slots), "every worker replaced"]
        await load.until({m[2] for m in serving})  # the callers moved on to the new workers
        outcomes = await load.stop()
    assert set(outcomes) == {"OK"}, outcomes
    code, _ = started.running.stop(STOP)
    assert code == 0


async def test_a_queue_subscription_is_handled_once_across_workers(
    workers: Callable[..., Workers],
) -> None:
    topic = unique("topic")
    started = workers(WORKERS_TEST_TOPIC=topic)
    publisher = micro_grpc.Service(unique("publisher"), config=MDNS)
    await publisher.start()
    by: collections.Counter[str] = collections.Counter()
    sent = 0
    try:
        publish = publisher.publisher(topic, Int64Value)
        while len(by) < WORKERS:  # until each worker has handled some
            assert sent < 500, f"only {dict(by)} handled the first {sent} messages"
            await publish.publish(Int64Value(value=sent))
            sent += 1
            by[(await started.wait_for(r"^handled \d+ by (\S+)"))[1]] += 1
    finally:
        await publisher.stop()
    code, _ = started.running.stop(STOP)
    assert code == 0
    handled = [m[1] for line in started.lines() if (m := re.match(r"handled (\d+) by", line))]
    assert sorted(int(value) for value in handled) == list(range(sent))  # each once
    assert set(by) == set(started.ids)


def test_a_worker_that_cannot_start_stops_the_whole(tmp_path: Path) -> None:
    done = micro("run", "nosuch", "--workers", "3", cwd=tmp_path)  # fails before mDNS
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "micro run: cannot import 'nosuch': No module named 'nosuch'"
    assert re.fullmatch(
        r"micro run: worker 0 \(pid \d+\) exited with exit status 1 before serving: stopping",
        lines[1],
    )
    assert len(lines) == 2  # imported in one worker first: one error, not three


def test_a_port_in_use_stops_the_whole() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = micro(
            "run", "worker_app", "--workers", "2", cwd=HERE, PYTHONPATH=PATH,
            WORKERS_TEST_SERVICE=unique("workers"), MICRO_SERVER_ADDRESS=f"127.0.0.1:{port}",
            timeout=START,  # worker 0 fails to bind before it announces anything
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot bind gRPC server to 127.0.0.1:{port}" in done.stderr
    assert done.stderr.splitlines()[-1].endswith("before serving: stopping")


@pytest.mark.parametrize("part", ["registry", "broker"])
def test_a_memory_registry_or_broker_is_refused(part: str) -> None:
    done = micro("run", "app", "--workers", "2", f"--{part}", "memory")
    assert done.returncode == 1
    assert done.stderr.startswith(f"micro run: --workers 2 with {part} memory (MICRO_")
    assert len(done.stderr.splitlines()) == 1


def test_fixed_ports_go_up_by_one_per_worker() -> None:
    config = Config(server_address="0.0.0.0:9000", server_advertise="shop.internal:7000")
    env = Supervisor("app", 3, config=config)._environment(2)
    assert env["MICRO_SERVER_ADDRESS"] == "0.0.0.0:9002"
    assert env["MICRO_SERVER_ADVERTISE"] == "shop.internal:7002"
    assert env["MICRO_WORKERS"] == "1"  # a worker serves, it does not supervise
    assert "MICRO_SERVER_ADDRESS" not in Supervisor("app", 3, config=Config())._environment(2)


def test_workers_setting() -> None:
    assert Config.from_env({"MICRO_WORKERS": "auto"}).workers == len(os.sched_getaffinity(0))
    assert Config.from_env({"MICRO_WORKERS": "4"}).workers == 4
    with pytest.raises(ConfigError, match=r"^MICRO_WORKERS='0': expected auto or a whole"):
        Config.from_env({"MICRO_WORKERS": "0"})
    done = micro("run", "app", "--workers", "many")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "micro run: error: argument --workers: expected auto or a whole number in [1, 1024] "
        "(see micro run --help)"
    ]


def test_exit_status_is_said_as_people_read_it() -> None:
    assert status(3) == "exit status 3"
    assert status(-signal.SIGKILL) == "signal SIGKILL"


APP = """
import micro

def create_service() -> micro.Service:
    return micro.Service("{name}", version="{version}", grace=5.0)
"""


def test_reload_replaces_the_workers_when_a_file_changes(tmp_path: Path, multicast: None) -> None:
    name = unique("workers")
    path = tmp_path / "app.py"
    path.write_text(APP.format(name=name, version="1"))
    running = Running("run", "app", "--workers", "2", "--reload", cwd=tmp_path)
    try:
        first = {running.wait_for(SERVING, START)[1] for _ in range(WORKERS)}
        running.wait_for("2 workers serving", START)
        path.write_text(APP.format(name=name, version="2"))
        later = time.time() + 5  # a new mtime even where its resolution is coarse
        os.utime(path, (later, later))
        running.wait_for(r"micro run: .*app\.py changed, replacing the workers")  # polled
        running.wait_for("micro run: every worker replaced", START)
        described = micro("describe", name, "--json")
    finally:
        code, _ = running.stop(STOP)
    assert code == 0
    new = {m[1] for line in running.seen if (m := re.match(SERVING, line))} - first
    assert len(new) == WORKERS
    assert '"version": "2"' in described.stdout
    assert '"version": "1"' not in described.stdout  # the old workers left the registry
