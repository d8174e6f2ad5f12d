"""Helpers for the codegen tests: running ``micro gen``, finding what a generated
module declares, sample messages, an echo handler for any service, and calling every
method of a service through the generated async and blocking clients."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc.aio
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

import micro

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "tests" / "protos"
GOLDEN = ROOT / "tests" / "golden"  # generated text pinned: tests/golden/update.py rewrites it
TIMEOUT = 10.0  # per call: a hang fails the call instead of the whole test run

_SERVICE = re.compile(r"^\s*service\s+\w+", re.MULTILINE)


def corpus_files() -> list[str]:
    """Every corpus .proto, relative to the include root ``tests/protos``."""
    return sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))


def declares_services(proto: str) -> bool:
    return bool(_SERVICE.search((PROTOS / proto).read_text()))


def module_name(proto: str, suffix: str) -> str:
    """``corpus/nested/b/v2/my-service.proto`` -> ``corpus.nested.b.v2.my_service_micro``."""
    return proto.removesuffix(".proto").replace("-", "_").replace("/", ".") + suffix


def script(name: str) -> str:
    """A console script installed beside the interpreter running the tests."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def micro_gen(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``micro gen ARGS`` as a user runs it; never raises on failure."""
    return subprocess.run(
        [script("micro"), "gen", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content: compares directories before/after."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class MypyRun:
    returncode: int
    output: str

    def errors_in(self, path: str) -> list[str]:
        """The error lines (not notes) mypy reported for ``path``."""
        return [
            line
            for line in self.output.splitlines()
            if line.startswith(f"{path}:") and ": error: " in line
        ]


def run_mypy(cwd: Path, cache: Path, *targets: str) -> MypyRun:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *targets],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return MypyRun(done.returncode, done.stdout + done.stderr)


# -- what a generated module declares ------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """The six classes generated for one service."""

    methods: type
    handler: type[micro.Handler]
    client: type[micro.Stub]
    sync_client: type[micro.SyncStub]
    calls: type[micro.Stub]
    sync_calls: type[micro.SyncStub]

    @property
    def descriptor(self) -> micro.ServiceDescriptor:
        return self.handler.__service__


def services(module: ModuleType) -> list[Generated]:
    """The services of a generated module, in declaration order.

    The template emits ``Methods``, ``Handler``, ``Client``, ``SyncClient``, ``Calls``
    and ``SyncCalls`` for each service in that order; this checks the grouping instead
    of trusting it.
    """
    classes = [
        v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__
    ]
    assert len(classes) % 6 == 0, [c.__name__ for c in classes]
    found = [Generated(*classes[i : i + 6]) for i in range(0, len(classes), 6)]
    for svc in found:
        assert issubclass(svc.handler, micro.Handler), svc
        assert issubclass(svc.client, micro.Stub), svc
        assert issubclass(svc.sync_client, micro.SyncStub), svc
        assert issubclass(svc.calls, micro.Stub), svc
        assert issubclass(svc.sync_calls, micro.SyncStub), svc
        declared = [m for m in vars(svc.methods).values() if isinstance(m, micro.Method)]
        assert list(svc.descriptor.methods) == declared, svc
    return found


# -- sample messages ------------------------------------------------------------------

_SCALARS: dict[int, Any] = {
    FieldDescriptor.TYPE_BOOL: True,
    FieldDescriptor.TYPE_FLOAT: 1.5,
    FieldDescriptor.TYPE_DOUBLE: 2.5,
}


def sample(cls: type[Message], depth: int = 0) -> Message:
    """A message of ``cls`` with every field it can hold set to a non-default value:
    scalars, enums, one field per oneof, one element per repeated field, nested
    messages two levels deep (required fields of proto2 included)."""
    msg = cls()
    _fill(msg, depth)
    return msg


def _fill(msg: Message, depth: int) -> None:
    for f in msg.DESCRIPTOR.fields:
        oneof = f.containing_oneof
        if oneof is not None and oneof.fields[0] is not f:
            continue
        if f.message_type is not None:
            if f.message_type.GetOptions().map_entry or depth >= 2:
                continue
            if f.is_repeated:
                _fill(getattr(msg, f.name).add(), depth + 1)
            else:
                sub = getattr(msg, f.name)
                sub.SetInParent()
                _fill(sub, depth + 1)
        elif f.is_repeated:
            getattr(msg, f.name).append(_scalar(f))
        else:
            setattr(msg, f.name, _scalar(f))


def _scalar(f: Any) -> Any:  # a FieldDescriptor, of the Python or the upb kind
    if f.type == FieldDescriptor.TYPE_STRING:
        return f.name
    if f.type == FieldDescriptor.TYPE_BYTES:
        return f.name.encode()
    if f.type == FieldDescriptor.TYPE_ENUM:
        assert f.enum_type is not None
        return f.enum_type.values[-1].number
    return _SCALARS.get(f.type, 7)


def reply(method: micro.Method[Any, Any], request: Message) -> Message:
    """What the echo handler answers: the request itself when the types match."""
    if method.response is method.request:
        return request
    return sample(method.response)


# -- serving --------------------------------------------------------------------------


@dataclass
class Seen:
    """What echo handlers received: (method path, number of request messages)."""

    calls: list[tuple[str, int]] = field(default_factory=list)


def echo_handler(svc: Generated, seen: Seen) -> micro.Handler:
    """A subclass of the generated handler whose every method answers, per kind:
    one reply, two replies, one reply after all requests, one reply per request."""
    namespace = {m.name: _ECHO[m.kind](m, seen) for m in svc.descriptor.methods}
    cls = type(f"Echo{svc.handler.__name__}", (svc.handler,), namespace)
    handler: micro.Handler = cls()
    return handler


def _unary_unary(method: micro.Method[Any, Any], seen: Seen) -> Any:
    async def impl(self: Any, request: Message, ctx: micro.Context) -> Message:
        assert ctx.method is method
        seen.calls.append((method.path, 1))
        return reply(method, request)

    return impl


def _unary_stream(method: micro.Method[Any, Any], seen: Seen) -> Any:
    async def impl(self: Any, request: Message, ctx: micro.Context) -> AsyncIterator[Message]:
        assert ctx.method is method
        seen.calls.append((method.path, 1))
        for _ in range(2):
            yield reply(method, request)

    return impl


def _stream_unary(method: micro.Method[Any, Any], seen: Seen) -> Any:
    async def impl(self: Any, requests: AsyncIterator[Message], ctx: micro.Context) -> Message:
        received = [r async for r in requests]
        seen.calls.append((method.path, len(received)))
        return reply(method, received[-1])

    return impl


def _stream_stream(method: micro.Method[Any, Any], seen: Seen) -> Any:
    async def impl(
        self: Any, requests: AsyncIterator[Message], ctx: micro.Context
    ) -> AsyncIterator[Message]:
        count = 0
        async for request in requests:
            count += 1
            yield reply(method, request)
        seen.calls.append((method.path, count))

    return impl


_ECHO = {
    "unary_unary": _unary_unary,
    "unary_stream": _unary_stream,
    "stream_unary": _stream_unary,
    "stream_stream": _stream_stream,
}

# Replies the echo handler sends, and requests the client sends, per kind.
REPLIES = {"unary_unary": 1, "unary_stream": 2, "stream_unary": 1, "stream_stream": 3}
REQUESTS = {"unary_unary": 1, "unary_stream": 1, "stream_unary": 3, "stream_stream": 3}


@contextlib.asynccontextmanager
async def serving(*handlers: micro.Handler) -> AsyncIterator[str]:
    """A plain grpc.aio server on a loopback port with ``handlers`` mounted."""
    server = grpc.aio.server()
    micro.mount(server, *handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


# -- calling --------------------------------------------------------------------------


async def _stream_of(requests: Sequence[Message]) -> AsyncIterator[Message]:
    for r in requests:
        yield r


async def call_async(stub: micro.Stub, method: micro.Method[Any, Any]) -> list[Message]:
    """Call ``method`` through a generated async client; returns every reply.

    Client streams are sent as a list for stream->unary and as an async generator
    for stream->stream, the two request shapes the async client accepts."""
    call = getattr(stub, method.name)
    request = sample(method.request)
    requests = [request] * REQUESTS[method.kind]
    with _deprecation(method):
        if method.kind == "unary_unary":
            return [await call(request, timeout=TIMEOUT)]
        if method.kind == "unary_stream":
            return [r async for r in call(request, timeout=TIMEOUT)]
        if method.kind == "stream_unary":
            return [await call(requests, timeout=TIMEOUT)]
        return [r async for r in call(_stream_of(requests), timeout=TIMEOUT)]


def call_sync(stub: micro.SyncStub, method: micro.Method[Any, Any]) -> list[Message]:
    """Call ``method`` through a generated blocking client (not on the server's loop)."""
    call = getattr(stub, method.name)
    request = sample(method.request)
    requests: Iterable[Message] = iter([request] * REQUESTS[method.kind])
    with _deprecation(method):
        if method.kind == "unary_unary":
            return [call(request, timeout=TIMEOUT)]
        if method.kind == "unary_stream":
            return list(call(request, timeout=TIMEOUT))
        if method.kind == "stream_unary":
            return [call(requests, timeout=TIMEOUT)]
        return list(call(requests, timeout=TIMEOUT))


@contextlib.contextmanager
def _deprecation(method: micro.Method[Any, Any]) -> Iterator[None]:
    """Deprecated methods must warn (other warnings fail the test: filterwarnings)."""
    if not method.deprecated:
        yield
        return
    with pytest.warns(DeprecationWarning, match=re.escape(f"{method.path} is deprecated")):
        yield


def expected(method: micro.Method[Any, Any]) -> list[Message]:
    return [reply(method, sample(method.request))] * REPLIES[method.kind]


async def round_trip(module: ModuleType) -> int:
    """Serve every service of ``module`` with echo handlers and call each method
    through both generated clients; returns how many methods were called."""
    found = services(module)
    seen = Seen()
    called = 0
    async with serving(*(echo_handler(s, seen) for s in found)) as address:
        options = micro.CallOptions(address=address)
        async with micro.Client() as client:
            for svc in found:
                stub = svc.client(svc.descriptor.name, client, options=options)
                sync_stub = svc.sync_client(svc.descriptor.name, client, options=options)
                for method in svc.descriptor.methods:
                    want = expected(method)
                    assert await call_async(stub, method) == want, method.path
                    got = await asyncio.to_thread(call_sync, sync_stub, method)
                    assert got == want, method.path
                    called += 1
    wanted = [
        (m.path, REQUESTS[m.kind]) for s in found for m in s.descriptor.methods for _ in range(2)
    ]
    assert seen.calls == wanted
    return called
