"""RPC: the micro clients against raw grpcio stubs and grpclib, on one greeter server.

One server process (``bench.greeter_server``) serves every round. For each mode
(async, sync), call shape (unary ``SayHello``; server-streaming ``LotsOfReplies``,
``STREAM_REPLIES`` messages per call) and concurrency, every variant runs interleaved
rounds of fixed duration (``bench.load``). Reported per variant: calls/s (median,
min-max, IQR over rounds), p50/p99 latency over every call of the measured rounds,
the client process's CPU time per call; against raw: the median of per-round ratios
of calls/s, and the overhead per call in microseconds (extra client CPU, extra p50
latency), each paired round by round, with their spread.

The raw baseline is what grpc's generated ``*_pb2_grpc`` stub does: a multicallable
from ``channel.unary_unary(path, request_serializer=..., response_deserializer=...,
_registered_method=True)``. A second raw stub on its own connection runs beside it as
a control: its ratio to raw shows how far two identical clients drift apart in this
run, which is the resolution of every other ratio. grpclib (async only) is a peer:
another asyncio gRPC client, for scale.

Micro clients come from ``CLIENT_MODES``: each entry turns the server's address into
a ``micro.Client`` plus the stub options to call through. ``direct-noop`` is
``direct`` with one middleware whose every hook does nothing but return an ending:
the cost of the middleware seam itself (``direct`` has none installed). On the
server side, ``server-noop`` is the raw stub calling a second server whose handlers
run one such middleware: its ratio to raw is what the server's seam costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import grpc.aio

import micro
from bench import greeter, load
from bench.greeter_server import STREAM_REPLIES, Noop
from bench.grpclib_greeter import GrpclibGreeter
from bench.servers import greeter_server
from micro.registry import MemoryRegistry, Node, Registry, Service

RAW = "raw"
CONTROL = "raw-control"  # raw again on its own connection: the noise floor (an A/A test)
SERVER_NOOP = "server-noop"  # raw, to a server running one no-op middleware
GRPCLIB = "grpclib"
# An argument grpc ignores: a channel with other arguments gets its own connection.
_OWN_CONNECTION = (("bench.connection", CONTROL),)
TARGETS = {"async": 0.95, "sync": 0.90}  # required calls/s ratio micro/raw
SHAPES = ("unary", "stream")


def settings_for(quick: bool) -> load.Settings:
    if quick:
        return load.Settings(rounds=3, round_s=0.1, warmup_s=0.05, concurrency=(1, 256))
    return load.Settings(rounds=8, round_s=0.35, warmup_s=0.2, concurrency=(1, 16, 64, 256))


# -- micro clients: one entry per way of reaching the server ---------------------


@dataclass(frozen=True)
class Target:
    """A micro client and the options its stubs call with."""

    client: micro.Client
    options: micro.CallOptions | None = None


def direct(address: str) -> Target:
    """Calls go straight to the server's address; no registry is opened."""
    return Target(micro.Client(), micro.CallOptions(address=address))


def direct_noop(address: str) -> Target:
    """``direct`` through one middleware that does nothing."""
    return Target(micro.Client(middleware=[Noop()]), micro.CallOptions(address=address))


def discovered(address: str) -> Target:
    """The whole pipeline: "greeter" resolved by name through the cached registry,
    a node picked by the default strategy, the retry plan around each call."""
    return Target(micro.Client(registry=registry_of("greeter", [address])))


def registry_of(service: str, addresses: list[str]) -> MemoryRegistry:
    """A registry holding ``addresses`` as the nodes of ``service`` (for an hour).
    Call it outside any event loop."""
    registry = MemoryRegistry()
    asyncio.run(register(registry, service, addresses))
    return registry


async def register(registry: Registry, service: str, addresses: list[str]) -> None:
    nodes = tuple(Node(id=f"bench-{i}", address=a) for i, a in enumerate(addresses))
    await registry.register(Service(name=service, nodes=nodes), ttl=3600)


# A mode maps the server's address to a Target. Modes are called outside any event
# loop (once for the async clients, once for the blocking ones).
CLIENT_MODES: dict[str, Callable[[str], Target]] = {
    "direct": direct,
    "direct-noop": direct_noop,
    "discovered": discovered,
}


def variant(mode: str) -> str:
    return f"micro-{mode}"


def make_targets(address: str) -> dict[str, Target]:
    return {mode: make(address) for mode, make in CLIENT_MODES.items()}


# -- one call of each shape, per client kind --------------------------------------


def raw_multicallable(channel: grpc.Channel | grpc.aio.Channel, pb2: Any, shape: str) -> Any:
    """SayHello or LotsOfReplies as grpc's generated stub makes it."""
    path, kind = {
        "unary": (greeter.SAY_HELLO, channel.unary_unary),
        "stream": (greeter.LOTS_OF_REPLIES, channel.unary_stream),
    }[shape]
    return kind(  # type: ignore[call-arg]  # grpc-stubs predate _registered_method
        path,
        request_serializer=pb2.HelloRequest.SerializeToString,
        response_deserializer=pb2.HelloReply.FromString,
        _registered_method=True,
    )


def async_call(shape: str, unary: Any, stream: Any) -> load.AsyncCall:
    """One call: the unary callable awaited, or every message of the stream read."""
    if shape == "unary":
        result: load.AsyncCall = unary
        return result

    async def drain(request: Any) -> None:
        async for _ in stream(request):
            pass

    return drain


def sync_call(shape: str, unary: Any, stream: Any) -> load.SyncCall:
    if shape == "unary":
        result: load.SyncCall = unary
        return result

    def drain(request: Any) -> None:
        for _ in stream(request):
            pass

    return drain


# -- comparisons -----------------------------------------------------------------


def summarise(
    mode: str, shape: str, concurrency: int, rounds: dict[str, list[load.Round]]
) -> dict[str, Any]:
    target = TARGETS[mode]
    ratios: dict[str, dict[str, Any]] = {}
    for name, measured in rounds.items():
        if name == RAW:
            continue
        kind = "control" if name == CONTROL else "peer" if name == GRPCLIB else "micro"
        ratio = load.versus(rounds[RAW], measured)
        ratio["kind"] = kind
        ratio["meets_target"] = ratio["calls_per_s"] >= target if kind == "micro" else None
        ratios[name] = ratio
    return {
        "mode": mode,
        "shape": shape,
        "concurrency": concurrency,
        "messages_per_call": STREAM_REPLIES if shape == "stream" else 1,
        "target": target,
        "variants": {name: load.variant_stats(measured) for name, measured in rounds.items()},
        "ratios": ratios,
    }


async def compare_async(
    address: str,
    noop_address: str,
    targets: dict[str, Target],
    generated: greeter.Greeter,
    settings: load.Settings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Raw, grpclib, micro (one per target) and control on one loop; closes them."""
    pb2 = generated.pb2
    channels = [
        grpc.aio.insecure_channel(address),
        grpc.aio.insecure_channel(address, _OWN_CONNECTION),
        grpc.aio.insecure_channel(noop_address),
    ]
    peer = GrpclibGreeter(address, pb2)
    stubs = {
        variant(mode): generated.micro.GreeterClient("greeter", t.client, options=t.options)
        for mode, t in targets.items()
    }
    request = pb2.HelloRequest(name="bench")
    results = []
    try:
        for shape in SHAPES:
            calls: dict[str, load.AsyncCall] = {}
            for name, channel in zip((RAW, CONTROL, SERVER_NOOP), channels, strict=True):
                multicallable = raw_multicallable(channel, pb2, shape)
                calls[name] = async_call(shape, multicallable, multicallable)
            # grpclib's stream call reads the whole stream itself, into a list.
            calls[GRPCLIB] = peer.say_hello if shape == "unary" else peer.lots_of_replies
            for name, stub in stubs.items():
                calls[name] = async_call(shape, stub.say_hello, stub.lots_of_replies)
            calls[CONTROL] = calls.pop(CONTROL)  # last: farthest from raw in each round
            for concurrency in settings.concurrency:
                log(f"rpc: async {shape}, concurrency {concurrency}")
                rounds = await load.interleaved(calls, request, concurrency, settings)
                results.append(summarise("async", shape, concurrency, rounds))
    finally:
        peer.close()
        for channel in channels:
            await channel.close(grace=None)
        for target in targets.values():
            await target.client.close()
    return results


def compare_sync(
    address: str,
    noop_address: str,
    targets: dict[str, Target],
    generated: greeter.Greeter,
    settings: load.Settings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Raw, micro (one per target) and control from threads; closes the targets."""
    pb2 = generated.pb2
    channels = [
        grpc.insecure_channel(address),
        grpc.insecure_channel(address, _OWN_CONNECTION),
        grpc.insecure_channel(noop_address),
    ]
    stubs = {
        variant(mode): generated.micro.GreeterSyncClient("greeter", t.client, options=t.options)
        for mode, t in targets.items()
    }
    request = pb2.HelloRequest(name="bench")
    results = []
    pool = ThreadPoolExecutor(max_workers=max(settings.concurrency), thread_name_prefix="bench")
    try:
        for shape in SHAPES:
            calls: dict[str, load.SyncCall] = {}
            for name, channel in zip((RAW, CONTROL, SERVER_NOOP), channels, strict=True):
                multicallable = raw_multicallable(channel, pb2, shape)
                calls[name] = sync_call(shape, multicallable, multicallable)
            for name, stub in stubs.items():
                calls[name] = sync_call(shape, stub.say_hello, stub.lots_of_replies)
            calls[CONTROL] = calls.pop(CONTROL)
            for concurrency in settings.concurrency:
                log(f"rpc: sync {shape}, concurrency {concurrency}")
                rounds = load.interleaved_sync(pool, calls, request, concurrency, settings)
                results.append(summarise("sync", shape, concurrency, rounds))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # idle unless a round hung
        for sync_channel in channels:
            sync_channel.close()
        for target in targets.values():
            target.client.close_sync()
    return results


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = settings_for(quick)
    generated = greeter.load()
    with greeter_server() as address, greeter_server("--noop-middleware") as noop_address:
        results = asyncio.run(
            compare_async(address, noop_address, make_targets(address), generated, settings, log)
        )
        results += compare_sync(
            address, noop_address, make_targets(address), generated, settings, log
        )
    return {
        "settings": asdict(settings),
        "client_modes": list(CLIENT_MODES),
        "targets": TARGETS,
        "stream_replies": STREAM_REPLIES,
        "results": results,
    }
