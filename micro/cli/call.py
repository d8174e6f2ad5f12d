"""``micro call`` and ``micro stream``: any method of any service, JSON in and out.

The method's message types come from server reflection on a node of the service,
and the call goes to nodes of that node's version; the call itself goes through
``micro.Client`` (discovery, node selection, retries, deadlines) exactly as generated
code would make it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from micro import errors, reflection
from micro.cli import common, output, reflect
from micro.cli.common import CliError
from micro.client import CallOptions, Client, Metadata
from micro.method import Method
from micro.selector import matching_nodes
from micro.tls import Tls, blocking_channel, plaintext_refused, uses_tls

CALL = """\
examples:
  micro call greeter Greeter.SayHello '{"name": "Ada"}'
  micro call greeter greeter.v1.Greeter.SayHello '{"name": "Ada"}' --version 1.0.0
  micro call greeter Greeter.SayHello '{"name": "Ada"}' -m x-user=ada --timeout 2
  echo '{"name": "Ada"}' | micro call greeter Greeter.SayHello -
  micro call greeter Greeter.SayHello '{}' --address 127.0.0.1:50051   (no registry)
"""

STREAM = """\
examples:
  micro stream greeter Greeter.LotsOfReplies '{"name": "Ada"}'        server streaming
  micro stream greeter Greeter.LotsOfGreetings '{"name": "a"}' '{"name": "b"}'
  printf '{"name":"a"}\\n{"name":"b"}\\n' | micro stream greeter Greeter.Chat --json
Requests: the JSON arguments, or else JSON lines on stdin, sent as they are read.
Replies: each printed as it arrives, as indented JSON; with --json, one JSON line each.
"""


def _call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", metavar="SERVICE", help="registered service name")
    parser.add_argument("method", metavar="METHOD", help="Service.Method or pkg.Service.Method")
    parser.add_argument("--version", help="only nodes of this version")
    parser.add_argument("--address", metavar="HOST:PORT", help="call this node, no registry")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="call deadline")
    parser.add_argument("--retries", type=int, metavar="N", help="attempts after the first")
    parser.add_argument(
        "-m",
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="request metadata (repeatable)",
    )


def add_parsers(commands: Any, shared: argparse.ArgumentParser) -> None:
    call = commands.add_parser(
        "call",
        parents=[shared],
        help="call a unary method with a JSON request",
        description="Call SERVICE's METHOD with REQUEST (JSON, '-' for stdin, default {}); "
        "prints the reply as JSON. Types come from server reflection.",
        epilog=CALL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _call_options(call)
    call.add_argument("request", nargs="?", default="{}", help="JSON request ('-': stdin)")
    call.set_defaults(run=lambda args: common.run(_call(args)))

    stream = commands.add_parser(
        "stream",
        parents=[shared],
        help="call a streaming method: JSON requests in, replies as they arrive",
        description="Call a server, client or bidi streaming method.",
        epilog=STREAM,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _call_options(stream)
    stream.add_argument("requests", nargs="*", default=[], metavar="REQUEST", help="JSON requests")
    stream.set_defaults(run=lambda args: common.run(_stream(args)))


async def resolve(client: Client, args: argparse.Namespace) -> tuple[Method[Any, Any], str | None]:
    """The method named on the command line, read from the reflection of a node the
    call could go to (``--address``, or a node of ``--version`` from the registry),
    and that node's version. Versions of a service may differ in their messages, so
    the call then goes only to nodes of that version: the request is encoded, and the
    reply decoded, with the types of the version that will answer."""
    config = client.config
    tls = Tls.from_config(config)
    secure: dict[str, bool] = {}  # what each node's entry says of TLS
    if args.address:
        candidates = {args.address: args.version}
    else:
        services = await common.asking(config, lambda: client.registry.get_service(args.service))
        if not services:
            raise CliError(f"service {args.service!r} not found in the {common.where(config)}")
        candidates = {}
        plaintext = 0  # nodes a client calling in TLS only leaves out
        for service in services:
            for node in matching_nodes([service], version=args.version):
                if plaintext_refused(tls, node.metadata):
                    plaintext += 1
                    continue
                candidates.setdefault(node.address, service.version)
                secure.setdefault(node.address, uses_tls(tls, node.metadata))
        if not candidates and plaintext:
            raise CliError(
                f"no node of service {args.service!r} serves TLS ({plaintext} plaintext): "
                "with a CA (--tls-ca, MICRO_TLS_CA) calls are TLS only"
            )
        if not candidates:
            versions = ", ".join(sorted(s.version or "''" for s in services))
            raise CliError(
                f"service {args.service!r} has no node of version {args.version!r} "
                f"(versions: {versions})"
            )
    limit = (
        min(args.timeout, reflection.REFLECTION_TIMEOUT)
        if args.timeout
        else reflection.REFLECTION_TIMEOUT
    )

    def ask(node: reflection.Reflection) -> tuple[Method[Any, Any], str | None]:
        return reflection.method(node.method(args.method)), candidates[node.address]

    def dial(address: str) -> grpc.Channel:
        return blocking_channel(address, args.service, tls, secure.get(address, uses_tls(tls, {})))

    token = config.auth_token
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    return await asyncio.to_thread(
        reflection.first_answer, list(candidates), ask, limit, dial, metadata
    )


def _check(args: argparse.Namespace) -> Metadata:
    """Fails on bad flags before any lookup; the request metadata."""
    if args.retries is not None and args.retries < 0:
        raise CliError(f"--retries {args.retries}: expected 0 or more")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout {args.timeout}: expected a positive number of seconds")
    return common.pairs(args.metadata, "-m")


def _options(args: argparse.Namespace, version: str | None) -> CallOptions:
    return CallOptions(version=version, address=args.address, retries=args.retries)


async def _call(args: argparse.Namespace) -> int:
    metadata = _check(args)
    text = sys.stdin.read() if args.request == "-" else args.request
    where = "stdin" if args.request == "-" else "the request argument"
    data = reflect.loads(text, where)  # bad JSON fails before any lookup
    async with Client(config=common.config(args)) as client:
        method, version = await resolve(client, args)
        options = _options(args, version)
        if method.client_streaming or method.server_streaming:
            raise CliError(f"{method.path[1:]} is {reflect.kind_name(method)}: use micro stream")
        request = reflect.fill(method.request, data, where)
        stub = reflection.Dynamic(args.service, client)
        try:
            reply = await stub.unary(method, request, args.timeout, metadata, options)
        except errors.Error as e:
            raise CliError(f"{args.service} {method.path[1:]}: {e}") from None
    if args.json:
        output.line(output.message(reply))
    else:
        output.emit(output.message(reply))
    return 0


async def _stream(args: argparse.Namespace) -> int:
    metadata = _check(args)
    show = output.line if args.json else output.emit
    given = [reflect.loads(t, f"request argument {i + 1}") for i, t in enumerate(args.requests)]
    async with Client(config=common.config(args)) as client:
        method, version = await resolve(client, args)
        options = _options(args, version)
        if not (method.client_streaming or method.server_streaming):
            raise CliError(f"{method.path[1:]} is unary: use micro call")
        stub = reflection.Dynamic(args.service, client)
        bad: list[CliError] = []
        request: Any
        if method.client_streaming and args.requests:
            request = _iterate(
                [_fill(method, d, f"request argument {i + 1}") for i, d in enumerate(given)]
            )
        elif method.client_streaming:
            request = _stdin_requests(method.request, bad)
        elif len(given) > 1:
            raise CliError(f"{method.path[1:]} takes one request, {len(given)} given")
        elif given:
            request = _fill(method, given[0], "the request argument")
        else:
            request = _fill(method, await _one_line(), "stdin")
        try:
            if method.server_streaming:
                async for reply in stub.streaming(method, request, args.timeout, metadata, options):
                    show(output.message(reply))
            else:
                reply = await stub.unary(method, request, args.timeout, metadata, options)
                show(output.message(reply))
        except (errors.Error, asyncio.CancelledError) as e:
            if bad:  # grpc cancelled the call because the input was bad: say where
                raise bad[0] from None
            if isinstance(e, asyncio.CancelledError):
                raise
            raise CliError(f"{args.service} {method.path[1:]}: {e}") from None
    return 0


def _fill(method: Method[Any, Any], data: Any, where: str) -> Message:
    return reflect.fill(method.request, data, where)


async def _iterate(messages: list[Message]) -> AsyncIterator[Message]:
    for m in messages:
        yield m


async def _one_line() -> Any:
    async for number, text in _lines():
        return reflect.loads(text, f"stdin line {number}")
    raise CliError("expected one JSON request on stdin, got none")


async def _stdin_requests(kind: type[Message], bad: list[CliError]) -> AsyncIterator[Message]:
    """Requests from stdin as they are typed or piped. Bad input ends the call: the
    error is kept in ``bad`` and raising here makes grpc cancel the call."""
    async for number, text in _lines():
        try:
            yield reflect.fill(
                kind, reflect.loads(text, f"stdin line {number}"), f"stdin line {number}"
            )
        except CliError as e:
            bad.append(e)
            raise


async def _lines() -> AsyncIterator[tuple[int, str]]:
    """Non-blank stdin lines, read on a daemon thread so a pending read never holds
    up the exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for text in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, text)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:  # the loop closed first: the command is over
            return

    threading.Thread(target=read, name="micro-stdin", daemon=True).start()
    number = 0
    while (text := await queue.get()) is not None:
        number += 1
        if text.strip():
            yield number, text
