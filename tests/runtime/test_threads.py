"""``def`` handlers run in a pool of the server's own: hung calls neither stall the
others (while the pool has threads left) nor keep a stopped service alive."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import echo_micro
import echo_pb2
from blocking_node import HOLD, HOLD_BOUND, Blocking
from runtime_support import GEN, HERE

import micro

Req = echo_pb2.EchoRequest

# asyncio's default executor, where def handlers ran before: this many hung calls
# filled it, and every other def call waited behind them.
DEFAULT_EXECUTOR = min(32, (os.cpu_count() or 1) + 4)


async def test_hung_def_calls_leave_the_rest_of_the_pool_serving() -> None:
    hung = DEFAULT_EXECUTOR
    config = micro.Config(registry="memory", server_threads=hung + 2)
    svc = micro.Service("blocking", config=config)
    handler = Blocking(svc.id)
    loop = asyncio.get_running_loop()
    all_hung = asyncio.Event()

    def arrived(n: int) -> None:  # in the handler's thread
        if n == hung:
            loop.call_soon_threadsafe(all_hung.set)

    handler.on_arrival = arrived
    svc.handle(handler)
    await svc.start()
    try:
        async with micro.Client(config=config) as client:
            echo = echo_micro.EchoClient(
                "blocking", client, options=micro.CallOptions(address=svc.address)
            )
            held = [asyncio.ensure_future(echo.get(Req(text=HOLD))) for _ in range(hung)]
            await asyncio.wait_for(all_hung.wait(), HOLD_BOUND)  # each blocks a thread now
            # Answered while they hang (the bound only ends a failing test: they hang
            # for HOLD_BOUND seconds, and a call waiting behind them as long).
            reply = await asyncio.wait_for(echo.get(Req(text="free")), HOLD_BOUND / 2)
            assert reply.text == "free"
            assert not any(call.done() for call in held)
            handler.release.set()
            assert [r.text for r in await asyncio.gather(*held)] == [HOLD] * hung
    finally:
        handler.release.set()
        await svc.stop(grace=0)


def test_pool_size_from_the_environment_or_an_option() -> None:
    config = micro.Config.from_env({"MICRO_REGISTRY": "memory", "MICRO_SERVER_THREADS": "3"})
    assert micro.Service("sized", config=config).server.threads == 3
    assert micro.Service("sized", config=config, threads=5).server.threads == 5
    assert micro.Service("sized", config=micro.Config(registry="memory")).server.threads == (
        DEFAULT_EXECUTOR  # the same default size as asyncio's executor
    )


async def test_a_hung_def_call_does_not_keep_a_stopped_service_alive() -> None:
    grace = 1.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GEN), str(HERE)])}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "blocking_node.py"),
        "--grace",
        str(grace),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    try:
        address = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))["address"]
        async with micro.Client(config=micro.Config(registry="memory")) as client:
            echo = echo_micro.EchoClient(
                "blocking", client, options=micro.CallOptions(address=address, retries=0)
            )
            call = asyncio.ensure_future(echo.get(Req(text=HOLD)))
            arrival = await asyncio.wait_for(child.stdout.readline(), 30)
            assert json.loads(arrival) == {"received": 1}  # its thread is blocked now
            child.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # The child exits by itself once HOLD_BOUND has passed: a failing test ends.
            code = await asyncio.wait_for(child.wait(), HOLD_BOUND + 30)
            exited = time.monotonic()
            await asyncio.gather(call, return_exceptions=True)
        stopped = json.loads(await child.stdout.readline())["stopped"]
        log = (await child.stderr.read()).decode()
        assert code == 0, log
        # The stop took its grace, abandoned the hung thread and ended within the
        # second the issue allows for the rest of it ...
        assert stopped - signalled <= grace + 1.0, (stopped - signalled, log)
        assert "abandoned 1 call(s) still running in handler threads: /echo.v1.Echo/Get" in log
        # ... and the thread did not hold the process: it would have for HOLD_BOUND.
        # (Not grace + 1 s: the interpreter's own exit after a stop, grpc's teardown,
        # took 0.1-0.3 s here and up to 4 s on a loaded machine, hung call or not.)
        assert exited - signalled < HOLD_BOUND / 2, (exited - signalled, log)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
