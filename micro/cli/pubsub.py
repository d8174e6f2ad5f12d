"""``micro publish`` and ``micro subscribe``: typed events from the command line.

Message types are found, in order: in modules named with ``--proto-module`` (their
``_pb2`` types join protobuf's default pool when imported), among the well-known
types, and through server reflection of a node of ``--from SERVICE``. On the grpc
broker a publish finds subscribers through the registry, and a subscribe runs a small
``micro.Service`` (named ``micro.cli``) that serves ``micro.Delivery``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import logging
import os
import signal
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from micro import codec, reflection
from micro.broker import EventContext, Publisher
from micro.broker import from_config as broker_from_config
from micro.broker.base import TYPE_HEADER, Envelope
from micro.cli import common, output, reflect
from micro.cli.common import CliError
from micro.config import Config
from micro.selector import matching_nodes
from micro.service import Service

# Imported so their types are in the default pool for --type.
WELL_KNOWN = (
    "google.protobuf.any_pb2",
    "google.protobuf.duration_pb2",
    "google.protobuf.empty_pb2",
    "google.protobuf.struct_pb2",
    "google.protobuf.timestamp_pb2",
    "google.protobuf.wrappers_pb2",
)
SUBSCRIBER = "micro.cli"  # the service a CLI subscriber registers as

PUBLISH = """\
examples:
  micro publish greeting.sent '{"name": "Ada"}' --type greeter.v1.HelloRequest --from greeter
  micro publish audit '{"value": "hi"}' --type google.protobuf.StringValue
  micro publish user.created '{"id": "7"}' --type shop.v1.UserCreated \\
      --proto-module shop.api.shop.v1.shop_pb2
"""

SUBSCRIBE = """\
examples:
  micro subscribe greeting.sent                       decode by the type each message names
  micro subscribe greeting.sent --queue audit --count 1 --json
  micro subscribe user.created --type shop.v1.UserCreated --proto-module shop.api.shop.v1.shop_pb2
"""


def _type_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--proto-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this _pb2 module for its message types (repeatable)",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="SERVICE",
        help="read message types from SERVICE's reflection",
    )


def add_parsers(commands: Any, shared: argparse.ArgumentParser) -> None:
    publish = commands.add_parser(
        "publish",
        parents=[shared],
        help="publish one JSON message as a typed event",
        description="Publish MESSAGE (JSON) on TOPIC as message type --type.",
        epilog=PUBLISH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("topic")
    publish.add_argument("message", help="JSON message")
    publish.add_argument("--type", required=True, metavar="pkg.Message", help="message type")
    publish.add_argument(
        "-H", "--header", action="append", default=[], metavar="KEY=VALUE", help="event header"
    )
    _type_options(publish)
    publish.set_defaults(run=lambda args: common.run(_publish(args)))

    subscribe = commands.add_parser(
        "subscribe",
        parents=[shared],
        help="print the events published on a topic",
        description="Print each message on TOPIC (until interrupted or --count).",
        epilog=SUBSCRIBE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subscribe.add_argument("topic")
    subscribe.add_argument(
        "--type", metavar="pkg.Message", help="decode as this type (default: the type sent)"
    )
    subscribe.add_argument("--queue", metavar="Q", help="compete with other members of Q")
    subscribe.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    _type_options(subscribe)
    subscribe.set_defaults(run=lambda args: common.run(_subscribe(args)))


class Types:
    """Message classes by full name, from the sources the command line names."""

    def __init__(self, config: Config, modules: list[str], source: str | None) -> None:
        for name in (*WELL_KNOWN, *modules):
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise CliError(f"--proto-module {name}: {e}") from None
        self.config = config
        self.source = source
        self._reflected: dict[str, type[Message]] = {}

    async def find(self, full_name: str) -> type[Message]:
        try:
            desc = descriptor_pool.Default().FindMessageTypeByName(full_name)
        except KeyError:
            pass
        else:
            return message_factory.GetMessageClass(desc)
        if self.source is None:
            raise CliError(
                f"unknown message type {full_name!r}: import its _pb2 module with "
                "--proto-module, or name a service that serves it with --from"
            )
        if full_name not in self._reflected:
            self._reflected[full_name] = await self._reflect(full_name)
        return self._reflected[full_name]

    async def _reflect(self, full_name: str) -> type[Message]:
        source = self.source
        assert source is not None
        async with common.opened(self.config) as registry:
            services = await common.asking(self.config, lambda: registry.get_service(source))
        addresses = [node.address for node in matching_nodes(services)]
        if not addresses:
            raise CliError(f"--from {source}: not found in the {common.where(self.config)}")
        return await asyncio.to_thread(
            reflection.first_answer, addresses, lambda node: node.message(full_name)
        )


async def _publish(args: argparse.Namespace) -> int:
    config = common.config(args)
    _cross_process(config)
    data = reflect.loads(args.message, "the message argument")
    headers = dict(common.pairs(args.header, "-H"))
    kind = await Types(config, args.proto_module, args.source).find(args.type)
    event = reflect.fill(kind, data, "the message argument")
    if not os.environ.get("MICRO_LOG_LEVEL"):
        # What the broker says of the delivery (no subscriber found, one unreachable)
        # is the command's outcome: shown on stderr like its notes.
        logging.getLogger("micro.broker").setLevel(logging.WARNING)
    async with common.opened(config) as registry:
        broker = broker_from_config(config, registry)
        await broker.connect()
        try:
            message_id = await Publisher(broker, args.topic, kind).publish(event, headers)
        finally:
            await broker.close()
    if args.json:
        output.line({"topic": args.topic, "type": args.type, "id": message_id})
    else:
        output.note(f"published {args.type} on {args.topic} as {message_id}")
    return 0


async def _subscribe(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise CliError(f"--count {args.count}: expected at least 1")
    config = common.config(args)
    _cross_process(config)
    types = Types(config, args.proto_module, args.source)
    fixed = await types.find(args.type) if args.type else None
    received: asyncio.Queue[Envelope | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # end as after --count: leave the registry
        loop.add_signal_handler(sig, received.put_nowait, None)
    service = Service(SUBSCRIBER, config=config)

    @service.subscribe(args.topic, queue=args.queue)
    async def collect(envelope: Envelope, ctx: EventContext) -> None:
        received.put_nowait(envelope)

    await service.start()
    try:
        output.note(f"subscribed to {args.topic} at {service.address} (node {service.id})")
        seen = 0
        while args.count is None or seen < args.count:
            envelope = await received.get()
            if envelope is None:
                break
            await _show(envelope, fixed, types, args.json)
            seen += 1
    finally:
        await service.stop(grace=1.0)
    return 0


async def _show(
    envelope: Envelope, fixed: type[Message] | None, types: Types, as_json: bool
) -> None:
    sent = envelope.headers.get(TYPE_HEADER, "")
    body: Any
    try:
        kind = fixed or await types.find(sent)
        body = output.message(codec.decode(envelope.body, kind, envelope.content_type))
    except (CliError, reflection.ReflectionError, codec.CodecError) as e:
        body = {"undecoded": base64.b64encode(envelope.body).decode(), "why": str(e)}
    headers = {k: v for k, v in envelope.headers.items() if k != TYPE_HEADER}
    record = {
        "topic": envelope.topic,
        "id": envelope.id,
        "type": sent,
        "headers": headers,
        "message": body,
    }
    if as_json:
        output.line(record)
    else:
        heading = f"{envelope.topic} {sent} {envelope.id} {output.labels(headers)}"
        print(heading.rstrip(), flush=True)
        output.emit(body)


def _cross_process(config: Config) -> None:
    if config.broker == "memory":
        raise CliError(
            "MICRO_BROKER=memory lives inside one process: the CLI cannot reach it "
            "(use the grpc broker or a broker server)"
        )
