"""``micro services``, ``micro describe``, ``micro watch``: the registry's view."""

from __future__ import annotations

import argparse
import time
from typing import Any

from micro.broker.peer import entry_name
from micro.cli import common, output
from micro.cli.common import CliError
from micro.cli.pubsub import SUBSCRIBER
from micro.registry import EventType, RegistryError, Service

SERVICES = """\
examples:
  micro services
  micro services --all           with micro's own entries (subscriptions, CLI subscribers)
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

# Entries micro registers for itself: the grpc broker's subscriptions
# (micro.broker.<topic>) and ``micro subscribe``'s own service (micro.cli).
INTERNAL_PREFIX = entry_name("")


def add_parsers(commands: Any, shared: argparse.ArgumentParser) -> None:
    services = commands.add_parser(
        "services",
        parents=[shared],
        help="list the services in the registry",
        description="Every service the registry knows: versions and node counts. "
        "micro's own entries (micro.broker.*, micro.cli) only with --all.",
        epilog=SERVICES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    services.add_argument("--all", action="store_true", help="micro's own entries too")
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
        description="The nodes already there (exists), then nodes joining (create), "
        "changing (update) and leaving (delete), until interrupted or --count events "
        "(nodes already there are not counted).",
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
    if not args.all:
        found = [s for s in found if not internal(s.name)]
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


def internal(name: str) -> bool:
    """Whether ``name`` is an entry micro registers for itself."""
    return name.startswith(INTERNAL_PREFIX) or name == SUBSCRIBER


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
        events = registry.watch(args.service)  # before the listing: nothing falls between
        try:
            if args.service is None:
                there = await registry.list_services()
            else:
                there = await registry.get_service(args.service)
            output.note(f"watching {args.service or 'every service'} in the {common.where(config)}")
            # A registry's watch may start with what is already there as creates (mDNS
            # does): shown once, as exists, and not counted.
            existing: set[str] = set()
            for s in there:
                for n in s.nodes:
                    _show("exists", s.with_nodes((n,)), args.json)
                    existing.add(n.id)
            async for event in events:
                (node,) = event.service.nodes
                if event.type is EventType.CREATE and node.id in existing:
                    existing.discard(node.id)
                    continue
                existing.discard(node.id)
                _show(event.type.value, event.service, args.json)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        except RegistryError as e:
            raise CliError(f"{common.where(config)}: watch failed: {e}") from None
    return 0


def _show(kind: str, s: Service, as_json: bool) -> None:
    if as_json:
        output.line({"type": kind, "time": time.time(), **record(s)})
        return
    stamp = time.strftime("%H:%M:%S")
    for n in s.nodes:
        print(f"{stamp} {kind:<6} {s.name} {s.version or '-'} {n.id} {n.address}", flush=True)
