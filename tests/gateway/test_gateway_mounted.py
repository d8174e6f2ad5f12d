"""The gateway mounted under a path of a Starlette application (as in FastAPI), served
by uvicorn beside the application's own route."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from gateway_support import Stack
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from micro.gateway.serving import Server, bind


async def own(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the application's own")


@pytest.fixture(scope="module")
def mounted(stack: Stack) -> Iterator[str]:
    """The base URL of an application with the gateway at /api."""
    app = Starlette(routes=[Route("/own", own), Mount("/api", app=stack.gateway)])
    listener = bind("127.0.0.1", 0)
    server = Server(app)

    async def start() -> asyncio.Future[None]:
        serving = asyncio.ensure_future(server.serve(sockets=[listener]))
        await server.ready.wait()
        return serving

    serving = stack.run(start())

    async def stop() -> None:
        server.stop()
        await serving

    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stack.run(stop())
    listener.close()


def test_every_route_works_below_the_mount_point(mounted: str) -> None:
    with httpx.Client(base_url=mounted, timeout=60.0) as http:
        assert http.get("/own").text == "the application's own"
        answer = http.post("/api/library/Library/GetBook", json={"name": "n"})
        assert answer.json() == {"id": "n", "title": "Title of n"}
        assert http.get("/api/v1/shelves/1/books/2").json()["id"] == "2"
        assert "/v1/shelves/{shelf}/books" in http.get("/api/openapi.json").json()["paths"]
        assert http.get("/api/docs").status_code == 200
        assert http.get("/api/docs/assets/docs.js").status_code == 200  # as the page links it
        missing = http.get("/api/v2/nothing")
        assert missing.json()["message"] == "no route for GET /v2/nothing"
