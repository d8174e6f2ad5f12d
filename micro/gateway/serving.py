"""The gateway served by uvicorn on a socket bound beforehand (so port 0 works and
the caller knows the port), for ``micro api``, tests and benchmarks alike."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

try:
    import uvicorn
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError("micro api needs uvicorn: install `micro-grpc[gateway]`") from None

from starlette.types import ASGIApp


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free one), for ``serve``.
    IPPROTO_TCP explicitly: asyncio turns Nagle's algorithm off only on sockets that
    say so, and with it on every answer waits out the client's delayed ACK (~40 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    return listener


class Server(uvicorn.Server):
    """``await server.serve(sockets=[listener])`` until ``stop()`` (or, in the main
    thread, SIGINT/SIGTERM); ``started`` is set once requests are accepted."""

    def __init__(self, app: ASGIApp, cert: str | None = None, key: str | None = None) -> None:
        """``cert``, ``key``: PEM files to serve HTTPS with."""
        super().__init__(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                server_header=False,
                ssl_certfile=cert,
                ssl_keyfile=key,
            )
        )
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGINT/SIGTERM: stop gracefully (a second one: at once). Unlike uvicorn's,
        the signal is not raised again after the shutdown: the command exits 0."""
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, then return from serve."""
        self.should_exit = True
