"""``micro services``, ``micro describe``, ``micro watch``: the registry's view."""

from __future__ import annotations

import argparse
import time
from typing import Any

from micro.cli import common, output
from micro.cli.common import CliError
from micro.registry import Event, RegistryError, Service

SERVICES = """\
examples:
  micro services
  micro services --json | jq '.[].name'
  MICRO_REGISTRY=nats MICRO_REGISTRY_ADDRESS=nats://10.0.0.5:4222 micro services
"""

DESCRIBE = """\
examples:
  micro describe greeter
  micro describe greeter --json | jq '.[0].endpoints'
"""

WATCH = """\
examples:
  micro watch                    until Ctrl-C
  micro watch --count 3 --json   three events as JSON lines, then exit
"""


def add_parsers(commands: Any, shared: argparse.ArgumentParser) -> None:
    services = commands.add_parser(
        "services",
        parents=[shared],
        help="list the services in the registry",
        description="Every service the registry knows: versions and node counts.",
        epilog=SERVICES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    services.set_defaults(run=lambda args: common.run(_services(args)))

    describe = commands.add_parser(
        "describe",
        parents=[shared],
        help="show a service's versions, nodes, metadata and endpoints",
        description="One service as the registry has it: per version its metadata, "
        "nodes and endpoints with request and response types.",
        epilog=DESCRIBE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    describe.add_argument("service")
    describe.set_defaults(run=lambda args: common.run(_describe(args)))

    watch = commands.add_parser(
        "watch",
        parents=[shared],
        help="print registry events as they happen",
        description="Nodes joining (create), changing (update) and leaving (delete), "
        "until interrupted or --count events.",
        epilog=WATCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("service", nargs="?", help="only this service's events")
    watch.add_argument("--count", type=int, metavar="N", help="exit after N events")
    watch.set_defaults(run=lambda args: common.run(_watch(args)))


def record(service: Service) -> dict[str, Any]:
    """A registry entry as JSON."""
    return {
        "name": service.name,
        "version": service.version,
        "metadata": dict(service.metadata),
        "endpoints": [
            {
                "name": e.name,
                "request": e.request,
                "response": e.response,
                "metadata": dict(e.metadata),
            }
            for e in service.endpoints
        ],
        "nodes": [
            {"id": n.id, "address": n.address, "metadata": dict(n.metadata)} for n in service.nodes
        ],
    }


async def _services(args: argparse.Namespace) -> int:
    config = common.config(args)
    async with common.opened(config) as registry:
        found = await common.asking(config, registry.list_services)
    names: dict[str, dict[str, Any]] = {}
    for s in sorted(found, key=lambda s: (s.name, s.version)):
        entry = names.setdefault(s.name, {"name": s.name, "versions": [], "nodes": 0})
        entry["versions"].append(s.version)
        entry["nodes"] += len(s.nodes)
    if args.json:
        output.emit(list(names.values()))
    else:
        rows = [
            (n["name"], ", ".join(v or "-" for v in n["versions"]), n["nodes"])
            for n in names.values()
        ]
        output.table(("SERVICE", "VERSIONS", "NODES"), rows)
    return 0


async def _describe(args: argparse.Namespace) -> int:
    config = common.config(args)
    async with common.opened(config) as registry:
        found = await common.asking(config, lambda: registry.get_service(args.service))
    if not found:
        raise CliError(f"service {args.service!r} not found in the {common.where(config)}")
    found.sort(key=lambda s: s.version)
    if args.json:
        output.emit([record(s) for s in found])
        return 0
    for s in found:
        title = f"{s.name} {s.version or '(no version)'}"
        if s.metadata:
            title += f"  [{output.labels(s.metadata)}]"
        output.table(
            ("NODE", "ADDRESS", "METADATA"),
            [(n.id, n.address, output.labels(n.metadata)) for n in s.nodes],
            title=title,
        )
        output.table(
            ("ENDPOINT", "REQUEST", "RESPONSE", "KIND"),
            [(e.name, e.request, e.response, e.metadata.get("kind", "")) for e in s.endpoints],
        )
    return 0


async def _watch(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise CliError(f"--count {args.count}: expected at least 1")
    config = common.config(args)
    async with common.opened(config) as registry:
        seen = 0
        events = registry.watch(args.service)
        output.note(f"watching {args.service or 'every service'} in the {common.where(config)}")
        try:
            async for event in events:
                _show(event, args.json)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        except RegistryError as e:
            raise CliError(f"{common.where(config)}: watch failed: {e}") from None
    return 0


def _show(event: Event, as_json: bool) -> None:
    s = event.service
    if as_json:
        output.line({"type": event.type.value, "time": time.time(), **record(s)})
        return
    stamp = time.strftime("%H:%M:%S")
    for n in s.nodes:
        print(
            f"{stamp} {event.type.value:<6} {s.name} {s.version or '-'} {n.id} {n.address}",
            flush=True,
        )
