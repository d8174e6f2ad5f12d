"""The ASGI application: HTTP and WebSocket requests in, calls through ``micro.Client``.

Routes, looked up per request against the registry (so services come and go):

    POST /<service>/<Service>/<Method>     every method; proto3 JSON body
    <the routes google.api.http declares>  path variables, body, query parameters
    GET  /openapi.json                      OpenAPI 3.1 of every registered service
    GET  /docs                              a page to read and try them (no CDN)
    WS   /<service>/<Service>/<Method>     any method, streams included: a JSON text
                                            message per request, an empty one ends them

A server-streaming reply is newline-delimited JSON, or Server-Sent Events when the
``Accept`` header asks for ``text/event-stream``. Errors are the gRPC status as
``google.rpc.Status`` JSON under the HTTP status google.rpc.Code gives it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from micro import errors
from micro.calls import UnaryStreamCall, UnaryUnaryCall
from micro.client import CallOptions, Client
from micro.gateway import comments, openapi, status, transcode
from micro.gateway.catalog import DEFAULT, Binding, Catalog, Operation
from micro.gateway.transcode import BadRequest
from micro.reflection import Dynamic, ReflectionError, Unreachable

log = logging.getLogger("micro.gateway")

MAX_BODY = 4 * 1024 * 1024  # bytes: the grpc server's default message size limit
VERBS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
PASSED = ("x-", "authorization")  # request headers that go to the service as metadata
TIMEOUT_HEADER = "x-request-timeout"  # seconds; or grpc-timeout in gRPC's own notation
_GRPC_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_NOT_PASSED_BACK = ("grpc-", "content-", "transfer-", "connection", "date", "server", ":")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class Gateway:
    """An ASGI app calling every service ``client``'s registry lists, over HTTP/JSON.

        gateway = Gateway(micro.Client())
        app.mount("/api", gateway)                  # in a Starlette/FastAPI app
        uvicorn.run(gateway, port=8080)             # or alone (what `micro api` does)

    The client is the caller's: close it when the app is done. ``max_body``: the
    largest request body (and WebSocket message) accepted, in bytes.
    ``descriptor_sets``: files built with source info, whose .proto comments describe
    the methods and messages in /openapi.json (reflection carries none). ``token``:
    the gateway's own, for services whose reflection needs one; calls carry the HTTP
    caller's ``Authorization``, never the gateway's.
    """

    def __init__(
        self,
        client: Client,
        *,
        max_body: int = MAX_BODY,
        title: str = "micro api",
        descriptor_sets: Sequence[str | Path] = (),
        token: str | None = None,
    ):
        if client.config.auth_token is not None:
            raise ValueError(
                "Gateway: the client sends its own token (MICRO_AUTH_TOKEN) with every call, "
                "so every HTTP caller would act with its rights; give the token as "
                "Gateway(token=...), used for reflection only, and a client without one"
            )
        self.client = client
        self.catalog = Catalog(client, token)
        self.notes = comments.load(descriptor_sets)
        self.max_body = max_body
        self.title = title
        self._app = Starlette(
            routes=[
                Route("/openapi.json", self._openapi, methods=["GET"]),
                Route("/docs", self._docs, methods=["GET"]),
                Mount("/docs/assets", StaticFiles(packages=[("micro.gateway", "assets")])),
                Route("/{path:path}", self._http, methods=VERBS),
                WebSocketRoute("/{path:path}", self._socket),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _openapi(self, request: Request) -> Response:
        return JSONResponse(openapi.document(await self.catalog.apis(), self.title, self.notes))

    async def _docs(self, request: Request) -> Response:
        page = resources.files("micro.gateway").joinpath("assets/docs.html").read_text()
        return HTMLResponse(page.replace("{{title}}", self.title))

    async def _http(self, request: Request) -> Response:
        try:
            op, binding, variables = await self._route(request.method, _raw_path(request.scope))
            if op.method.client_streaming:
                raise BadRequest(
                    f"{op.method.path[1:]} is client streaming: call it over a WebSocket"
                )
            content = await self._body(request)
            message = transcode.request(
                op.method.request,
                body=binding.body,
                content=content,
                variables=variables,
                query=parse_qsl(request.url.query, keep_blank_values=True),
                pool=op.pool,
            )
            metadata, timeout = _inbound(request.headers.items())
            stub = Dynamic(op.service, self.client)
            options = CallOptions(version=op.version)
            if op.method.server_streaming:
                replies = UnaryStreamCall[Message](
                    stub, op.method, message, timeout, metadata, options
                )
                return await _stream(replies, op, binding, request.headers.get("accept", ""))
            call = UnaryUnaryCall[Message](stub, op.method, message, timeout, metadata, options)
            reply = await call
            sent = (*await call.initial_metadata(), *await call.trailing_metadata())
            body = transcode.reply(reply, binding.response_body, op.pool)
            return JSONResponse(body, headers=_headers(sent))
        except Exception as e:
            return _failure(e)

    async def _route(self, verb: str, path: str) -> tuple[Operation, Binding, dict[str, str]]:
        """The operation ``verb path`` calls: the default POST route of a registered
        service's method, else an annotated route."""
        default = verb == "POST" and DEFAULT.template.pattern.fullmatch(path) is not None
        if default:
            name, service, method = (unquote(p) for p in path[1:].split("/"))
            api = await self.catalog.api(name)
            if api is not None and (op := api.find(service, method)) is not None:
                return op, DEFAULT, {}
        for stale in (False, True):
            for binding, op in await self.catalog.routes(stale):
                if binding.verb == verb and (found := binding.template.match(path)) is not None:
                    return await self._current(op), binding, found
        if default:
            if await self.catalog.api(name) is None:
                raise errors.NotFound(f"no service {name!r} in the registry")
            raise errors.NotFound(f"service {name!r} has no method {service}/{method}")
        raise errors.NotFound(f"no route for {verb} {path}")

    async def _current(self, op: Operation) -> Operation:
        """``op`` as its service is registered now (the route table may be older)."""
        api = await self.catalog.api(op.service)
        proto = op.descriptor.containing_service.full_name
        now = api.find(proto, op.descriptor.name) if api is not None else None
        if now is None:
            raise errors.NotFound(
                f"service {op.service!r} no longer serves {proto}/{op.descriptor.name}"
            )
        return now

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _TooLarge(self.max_body)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge(self.max_body)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _socket(self, socket: WebSocket) -> None:
        await socket.accept()
        bad: list[BadRequest] = []
        try:
            path = _raw_path(socket.scope)
            op, _, _ = await self._route("POST", path)
            metadata, timeout = _inbound(socket.headers.items())
            stub = Dynamic(op.service, self.client)
            options = CallOptions(version=op.version)
            requests = self._requests(socket, op, bad)
            request: Any = requests
            if not op.method.client_streaming:
                request = await anext(requests, None)
                if request is None:
                    await socket.close()
                    return
            if op.method.server_streaming:
                async for reply in stub.streaming(op.method, request, timeout, metadata, options):
                    await socket.send_text(_dumps(transcode.reply(reply, "", op.pool)))
            else:
                reply = await stub.unary(op.method, request, timeout, metadata, options)
                await socket.send_text(_dumps(transcode.reply(reply, "", op.pool)))
            await socket.close()
        except WebSocketDisconnect:
            return
        except (Exception, asyncio.CancelledError) as e:
            # grpc cancels a call whose requests failed: the bad request is the news
            if isinstance(e, asyncio.CancelledError) and not bad:
                raise
            failure = _failure(bad[0] if bad or not isinstance(e, Exception) else e)
            await socket.send_text(_dumps({"error": json.loads(bytes(failure.body))}))
            await socket.close(code=1011 if failure.status_code >= 500 else 1008)

    async def _requests(
        self, socket: WebSocket, op: Operation, bad: list[BadRequest]
    ) -> AsyncIterator[Message]:
        """Requests as the client sends them; an empty message (or its close) ends them."""
        number = 0
        while True:
            try:
                text = await socket.receive_text()
            except WebSocketDisconnect:
                return
            if not text:
                return
            number += 1
            where = f"WebSocket message {number}"
            try:
                if len(text) > self.max_body:
                    raise BadRequest(f"{where}: larger than {self.max_body} bytes")
                yield transcode.message(
                    op.method.request, transcode.loads(text, where), where, op.pool
                )
            except BadRequest as e:
                bad.append(e)
                raise


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")


async def _stream(
    replies: UnaryStreamCall[Message], op: Operation, binding: Binding, accept: str
) -> Response:
    """A server stream as NDJSON or SSE. The first reply is awaited before the answer
    starts, so a call that fails at once gets its own HTTP status, and the service's
    response headers are HTTP headers (its trailers too when there is no reply: after
    the body has begun they have nowhere to go); a later failure ends the stream with
    an error record."""
    events = "text/event-stream" in accept
    first = await replies.read()
    sent = await replies.initial_metadata()
    if first is None:
        sent = (*sent, *await replies.trailing_metadata())

    def record(data: Any, event: str = "") -> str:
        text = _dumps(data)
        if events:
            return f"event: {event}\ndata: {text}\n\n" if event else f"data: {text}\n\n"
        return text + "\n"

    async def body() -> AsyncIterator[str]:
        if first is None:
            return
        try:
            yield record(transcode.reply(first, binding.response_body, op.pool))
            async for reply in replies:
                yield record(transcode.reply(reply, binding.response_body, op.pool))
        except errors.Error as e:
            error = status.body(e, op.pool)
            yield record(error, "error") if events else record({"error": error})

    media = "text/event-stream" if events else "application/x-ndjson"
    return StreamingResponse(body(), media_type=media, headers=_headers(sent))


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _raw_path(scope: Scope) -> str:
    """The path as sent (percent-encoded), below where the app is mounted."""
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _inbound(headers: Any) -> tuple[list[tuple[str, str]], float | None]:
    """The metadata and deadline a request's headers give its call."""
    metadata, timeout = [], None
    for key, value in headers:
        if key == TIMEOUT_HEADER:
            timeout = _seconds(value)
        elif key == "grpc-timeout":
            found = _GRPC_TIMEOUT.fullmatch(value)
            if found is None:
                raise BadRequest(
                    f"grpc-timeout {value!r}: expected digits and a unit (H M S m u n)"
                )
            timeout = int(found[1]) * _UNITS[found[2]]
        elif key.startswith(PASSED):
            metadata.append((key, value))
    return metadata, timeout


def _headers(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """The service's response headers and trailers that make sense as HTTP headers:
    text values, not gRPC's own, not ones HTTP itself sets."""
    return {
        key: value
        for key, value in metadata
        if isinstance(value, str) and not key.startswith(_NOT_PASSED_BACK)
    }


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise BadRequest(f"{TIMEOUT_HEADER} {text!r}: expected a positive number of seconds")
    return seconds


def _failure(e: Exception) -> JSONResponse:
    """Any failure as a status body: nothing of a traceback leaves the process."""
    if isinstance(e, errors.Error):
        headers = _headers((*e.initial_metadata, *e.trailing_metadata))
        return JSONResponse(status.body(e), status.HTTP_STATUS[e.code], headers)
    if isinstance(e, BadRequest):
        return JSONResponse(status.body(errors.InvalidArgument(str(e))), 400)
    if isinstance(e, _TooLarge):
        return JSONResponse(status.body(errors.ResourceExhausted(str(e))), 413)
    if isinstance(e, Unreachable):
        return JSONResponse(status.body(errors.Unavailable(str(e))), 503)
    if isinstance(e, ReflectionError):
        return JSONResponse(status.body(errors.Internal(str(e))), 502)
    log.exception("gateway: unexpected failure")
    return JSONResponse(status.body(errors.Internal("the gateway failed; its log says why")), 500)
