"""``micro api``: the HTTP/JSON gateway (``micro.gateway``) served by uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Any

from micro.cli import common, output
from micro.cli.common import CliError
from micro.client import Client
from micro.tls import Tls

EXAMPLES = """\
examples:
  micro api                                   http://127.0.0.1:8080, docs at /docs
  micro api --address 127.0.0.1:9000
  curl -d '{"name": "Ada"}' http://127.0.0.1:8080/greeter/Greeter/SayHello
"""
DEFAULT_ADDRESS = "127.0.0.1:8080"


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "api",
        parents=[shared],
        help="serve every registered service over HTTP/JSON (OpenAPI at /openapi.json)",
        description="An HTTP gateway in front of the registry: POST /SERVICE/Service/Method "
        "with a JSON body, the routes google.api.http annotations declare, streams as "
        "NDJSON, Server-Sent Events or WebSocket, OpenAPI at /openapi.json, docs at /docs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT", help=f"({DEFAULT_ADDRESS})"
    )
    parser.add_argument("--max-body", type=int, metavar="BYTES", help="largest request body")
    parser.add_argument(
        "--descriptor-set",
        action="append",
        default=[],
        metavar="FILE",
        help="descriptors with source info (buf build -o FILE): .proto comments become "
        "the OpenAPI descriptions (repeatable)",
    )
    parser.set_defaults(run=lambda args: common.run(_serve(args)))


async def _serve(args: argparse.Namespace) -> int:
    try:
        from micro.gateway import MAX_BODY, Gateway
        from micro.gateway.comments import DescriptorSetError
        from micro.gateway.serving import Server, bind
    except ImportError as e:
        raise CliError(str(e)) from None
    config = common.config(args)
    tls = Tls.from_config(config)  # bad files fail here, naming the variable
    if args.max_body is not None and args.max_body <= 0:
        raise CliError(f"--max-body {args.max_body}: expected a positive number of bytes")
    host, sep, port = args.address.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"--address {args.address!r}: expected HOST:PORT")
    try:
        listener = bind(host.strip("[]"), int(port))
    except OSError as e:
        raise CliError(f"--address {args.address}: {e.strerror}") from None
    # The gateway's own token (MICRO_AUTH_TOKEN, --token) reads reflection; calls carry
    # each HTTP caller's Authorization, so the client sends none of its own.
    async with Client(config=dataclasses.replace(config, auth_token=None)) as client:
        try:
            gateway = Gateway(
                client,
                max_body=args.max_body or MAX_BODY,
                descriptor_sets=args.descriptor_set,
                token=config.auth_token,
            )
        except DescriptorSetError as e:
            raise CliError(str(e)) from None
        # With a certificate, HTTPS with it (a CA verifies the services it calls; HTTP
        # callers are not asked for certificates: their Authorization goes on).
        server = Server(gateway, *((tls.cert, tls.key) if tls else ()))
        serving = asyncio.ensure_future(server.serve(sockets=[listener]))
        started = asyncio.ensure_future(server.ready.wait())
        await asyncio.wait([serving, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if server.started:
            host, port = listener.getsockname()[:2]
            scheme = "https" if tls is not None and tls.cert else "http"
            output.note(f"micro api: serving on {scheme}://{host}:{port} (docs at /docs)")
        await serving  # until SIGINT/SIGTERM, which uvicorn handles: requests drain
    return 0
