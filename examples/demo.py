"""`make demo`: three greeter instances, found through the default registry (mDNS on
loopback), called with load balancing by a typed client and by the `micro` CLI; each
greeting is published as a typed event that a subscriber in this process receives.

Each instance is its own process, as in production; the client knows only the name
"greeter".
"""

from __future__ import annotations

import asyncio
import collections
import os
import shlex
import signal
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "gen"))  # made by `make gen`

from greeter.v1.greeter_micro import GreeterClient  # noqa: E402
from greeter.v1.greeter_pb2 import HelloRequest  # noqa: E402

import micro  # noqa: E402

INSTANCES = 3
CALLS = 30


async def wait_for_nodes(client: micro.Client, count: int, limit: float = 10.0) -> int:
    """Until the registry shows ``count`` greeter nodes; exits the demo (non-zero, one
    line saying what was expected and seen) if ``limit`` seconds pass first."""
    loop = asyncio.get_running_loop()
    begin = loop.time()
    while True:
        nodes = {
            n.id for s in await client.registry.backend.get_service("greeter") for n in s.nodes
        }
        if len(nodes) >= count:
            return len(nodes)
        waited = loop.time() - begin
        if waited > limit:
            seen = ", ".join(sorted(nodes)) or "none"
            raise SystemExit(
                f"demo failed: expected {count} 'greeter' instances in the registry, "
                f"saw {len(nodes)} ({seen}) after {waited:.1f} s"
            )
        await asyncio.sleep(0.1)


async def cli(env: dict[str, str], *command: str) -> None:
    """Run the `micro` CLI against the running instances, showing its output."""
    print(f"$ micro {shlex.join(command)}", flush=True)
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "micro", *command, env=env)
    if await process.wait() != 0:
        raise SystemExit(f"micro {command[0]} failed")


async def main() -> None:
    # A subscriber, started first: the instances find it through the registry and
    # deliver each event to its server (the default, zero-setup grpc broker).
    audit = micro.Service("audit")
    events: asyncio.Queue[str] = asyncio.Queue()

    @audit.subscribe("greeting.sent", queue="audit")
    async def on_greeting(event: HelloRequest, ctx: micro.EventContext) -> None:
        await events.put(ctx.headers["node"])

    await audit.start()
    env = {**os.environ, "MICRO_REGISTRY": os.environ.get("MICRO_REGISTRY", "mdns")}
    print(f"starting {INSTANCES} greeter instances (registry: {env['MICRO_REGISTRY']})")
    instances = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "greeter_service.py"), env=env
        )
        for _ in range(INSTANCES)
    ]
    try:
        async with micro.Client() as client:
            found = await wait_for_nodes(client, INSTANCES)
            print(f"discovered {found} instances of 'greeter'")
            greeter = GreeterClient("greeter", client)
            answered = collections.Counter[str]()
            for i in range(CALLS):
                reply = await greeter.say_hello(HelloRequest(name=f"caller {i}"), timeout=5)
                answered[reply.node] += 1
            print(f"{CALLS} calls, balanced (least_request) across instances:")
            for node, count in sorted(answered.items()):
                print(f"  {node}: {count:3d} {'#' * count}")
            rr = GreeterClient("greeter", client, options=micro.CallOptions(strategy="round_robin"))
            answered.clear()
            for _ in range(CALLS):
                answered[(await rr.say_hello(HelloRequest(name="rr"), timeout=5)).node] += 1
            print(f"{CALLS} calls, round_robin: {sorted(answered.values())}")
            replies = [
                r.message async for r in greeter.lots_of_replies(HelloRequest(name="stream"))
            ]
            print(f"server stream: {replies}")
            try:
                await greeter.say_hello(HelloRequest())
            except micro.errors.InvalidArgument as e:
                print(f"typed error from the handler: {type(e).__name__}: {e.message}")
        await cli(env, "services")
        await cli(env, "call", "greeter", "Greeter.SayHello", '{"name": "CLI"}')
        # Every greeting was published as an event by the instance that answered it.
        heard = [await asyncio.wait_for(events.get(), 10) for _ in range(2 * CALLS)]
        by_node = collections.Counter(heard)
        print(f"{len(heard)} 'greeting.sent' events received from {len(by_node)} publishers")
    finally:
        await audit.stop()
        for process in instances:
            process.send_signal(signal.SIGTERM)  # graceful: deregister, drain, stop
        codes = await asyncio.gather(*(p.wait() for p in instances))
        print(f"instances stopped gracefully: exit codes {codes}")


if __name__ == "__main__":
    asyncio.run(main())
