"""The HTTP/JSON gateway: ``micro api``, or an ASGI app to mount.

Calls every service in the registry over HTTP and JSON, through ``micro.Client``
(discovery, balancing, retries, deadlines), with message types from the services'
reflection: no generated code. See ``micro.gateway.app`` for the routes.

    from micro.gateway import Gateway
    app = Gateway(micro.Client())       # serve with uvicorn, or mount in Starlette/FastAPI
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError("micro.gateway needs starlette: install `micro-grpc[gateway]`") from None

from micro.gateway.app import MAX_BODY, Gateway

__all__ = ["MAX_BODY", "Gateway"]
