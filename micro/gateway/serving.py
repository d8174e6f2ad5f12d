"""The gateway served by uvicorn on a socket bound beforehand (so port 0 works and
the caller knows the port), for ``micro api``, tests and benchmarks alike."""

from __future__ import annotations

import asyncio
import socket

try:
    import uvicorn
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError("micro api needs uvicorn: install `micro-grpc[gateway]`") from None

from starlette.types import ASGIApp


class Server(uvicorn.Server):
    """``await server.serve(sockets=[listener])`` until ``stop()`` (or, in the main
    thread, SIGINT/SIGTERM); ``started`` is set once requests are accepted."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(
            uvicorn.Config(app, log_level="warning", lifespan="off", server_header=False)
        )
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, then return from serve."""
        self.should_exit = True
