"""``micro health``: the standard grpc.health.v1 check on every node, one row each."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from micro.cli import common, output
from micro.cli.common import CliError
from micro.registry import Service
from micro.tls import Tls, aio_channel, uses_tls

CHECK_TIMEOUT = 2.0  # seconds per node
BROKER_ENTRIES = "micro.broker."  # subscription entries: the same servers again

EXAMPLES = """\
examples:
  micro health                 every node of every service
  micro health greeter --json
Exits 1 when a node is not SERVING.
"""


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "health",
        parents=[shared],
        help="check the health of every node (grpc.health.v1)",
        description="Ask each node of SERVICE (default: every service) for its "
        "grpc.health.v1 status.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("service", nargs="?")
    parser.add_argument("--timeout", type=float, default=CHECK_TIMEOUT, metavar="SECONDS")
    parser.set_defaults(run=lambda args: common.run(_health(args)))


async def _health(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise CliError(f"--timeout {args.timeout}: expected a positive number of seconds")
    config = common.config(args)
    async with common.opened(config) as registry:
        if args.service:
            found = await common.asking(config, lambda: registry.get_service(args.service))
            if not found:
                raise CliError(f"service {args.service!r} not found in the {common.where(config)}")
        else:
            listed = await common.asking(config, registry.list_services)
            found = [s for s in listed if not s.name.startswith(BROKER_ENTRIES)]
    tls = Tls.from_config(config)
    nodes = [(s, n.id, n.address) for s in sorted(found, key=_order) for n in s.nodes]
    channels = [
        aio_channel(n.address, s.name, tls, uses_tls(tls, n.metadata))
        for s in sorted(found, key=_order)
        for n in s.nodes
    ]
    results = await asyncio.gather(*(_check(channel, args.timeout) for channel in channels))
    rows = [
        {
            "service": s.name,
            "version": s.version,
            "node": node,
            "address": address,
            "status": status,
            "ms": round(ms, 1),
        }
        for (s, node, address), (status, ms) in zip(nodes, results, strict=True)
    ]
    if args.json:
        output.emit(rows)
    else:
        output.table(
            ("SERVICE", "VERSION", "NODE", "ADDRESS", "STATUS", "MS"),
            [tuple(r.values()) for r in rows],
        )
    failing = [r for r in rows if r["status"] != "SERVING"]
    if failing:
        output.note(f"micro health: {len(failing)} of {len(rows)} nodes not serving")
        return 1
    return 0


def _order(s: Service) -> tuple[str, str]:
    return s.name, s.version


async def _check(channel: grpc.aio.Channel, timeout: float) -> tuple[str, float]:
    """The node's overall status (service ""), or why there is none, and how long
    the answer took in milliseconds."""
    started = time.monotonic()
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as e:
            status = e.code().name
    return status, (time.monotonic() - started) * 1000
