"""What generated modules promise beyond a round trip: descriptor fields, safe Python
names, docstrings, deprecation warnings, UNIMPLEMENTED defaults, ``def`` handlers and
typed errors, each checked on a specific corpus file."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import astuple
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from codegen_support import TIMEOUT, services, serving

import micro
from micro import errors
from protoc_gen_micro import naming

DEPRECATED_NOTE = "Deprecated: marked ``deprecated`` in the .proto file."


@pytest.fixture
def corpus(corpus_out: Path) -> Any:
    """``corpus.<name>`` as an attribute: ``corpus.options_micro``."""

    class Modules:
        def __getattr__(self, name: str) -> ModuleType:
            return importlib.import_module(f"corpus.{name}")

    return Modules()


# -- descriptors ----------------------------------------------------------------------

Idem = micro.Idempotency


@pytest.mark.parametrize(
    ("attr", "proto", "kind", "idempotency", "deprecated"),
    [
        ("read", "Read", "unary_unary", Idem.NO_SIDE_EFFECTS, False),
        ("put", "Put", "unary_unary", Idem.IDEMPOTENT, False),
        ("append", "Append", "unary_unary", Idem.IDEMPOTENCY_UNKNOWN, False),
        ("fetch", "Fetch", "unary_unary", Idem.NO_SIDE_EFFECTS, False),
        ("old_read", "OldRead", "unary_unary", Idem.IDEMPOTENCY_UNKNOWN, True),
        ("old_watch", "OldWatch", "unary_stream", Idem.NO_SIDE_EFFECTS, True),
        ("old_upload", "OldUpload", "stream_unary", Idem.IDEMPOTENCY_UNKNOWN, True),
        ("old_sync", "OldSync", "stream_stream", Idem.IDEMPOTENCY_UNKNOWN, True),
    ],
)
def test_descriptor_fields(
    corpus: Any, attr: str, proto: str, kind: str, idempotency: Idem, deprecated: bool
) -> None:
    method = getattr(corpus.options_micro.PoliciesMethods, attr)
    pb2 = corpus.options_pb2
    assert method.name == attr
    assert method.path == f"/corpus.options.Policies/{proto}"
    assert method.service == "corpus.options.Policies"
    assert method.kind == kind
    assert method.idempotency is idempotency
    assert method.idempotent is (idempotency is not Idem.IDEMPOTENCY_UNKNOWN)
    assert method.deprecated is deprecated
    assert {method.request, method.response} <= {pb2.Key, pb2.Value}


def test_micro_options_reach_the_descriptor(corpus: Any) -> None:
    methods = corpus.options_micro.PoliciesMethods
    fetch = methods.fetch
    assert fetch.retry_codes == ("DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
    assert fetch.max_attempts == 4
    assert fetch.timeout == 2.5
    assert fetch.retry_on == {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
    }
    assert methods.old_sync.timeout == 30.0
    assert methods.old_sync.retry_codes == ()
    # Without options: the client's defaults apply, and only UNAVAILABLE-class retries.
    assert (methods.append.max_attempts, methods.append.timeout) == (0, 0.0)
    assert methods.append.retry_on == frozenset()


def test_service_level_deprecation_covers_its_methods(corpus: Any) -> None:
    assert corpus.options_micro.LegacyMethods.ping.deprecated
    assert corpus.options_micro.LegacyHandler.__service__.name == "corpus.options.Legacy"


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "names"),
    [
        (
            "class",
            [
                ("def_", "def"),
                ("import_", "import"),
                ("async_", "async"),
                ("await_", "await"),
                ("none", "None"),
                ("true", "True"),
                ("lambda_", "lambda"),
            ],
        ),
        (
            "Range",
            [
                (n.lower(), n)
                for n in (
                    *("Range", "Type", "Print", "Float", "Str", "Object", "Self"),
                    *("Request", "Metadata", "Options", "Timeout", "Match"),
                )
            ],
        ),
        (
            "Collisions",
            [
                ("get_http_response", "GetHTTPResponse"),
                ("get_http_response_", "get_http_response"),
                ("get_http_response__", "GetHttpResponse"),
                ("def_", "def_"),
                ("def__", "Def"),
                ("def___", "def"),
            ],
        ),
    ],
)
def test_method_names_are_safe_and_stable(
    corpus: Any, service: str, names: list[tuple[str, str]]
) -> None:
    """Keywords get a trailing ``_``, builtins are kept, collisions after snake_casing
    take ``_`` in declaration order; the wire path keeps the proto name."""
    module = corpus.keywords_micro
    handler = getattr(module, f"{service}Handler")
    methods = handler.__service__.methods
    assert [(m.name, m.path) for m in methods] == [
        (py, f"/corpus.keywords.{service}/{proto}") for py, proto in names
    ]
    for cls in (
        handler,
        getattr(module, f"{service}Client"),
        getattr(module, f"{service}SyncClient"),
    ):
        assert all(inspect.isfunction(vars(cls)[py]) for py, _ in names), cls


def test_class_names_of_several_services_do_not_collide(corpus: Any) -> None:
    module = corpus.multi_micro
    assert [tuple(c.__name__ for c in astuple(s)) for s in services(module)] == [
        ("FooMethods", "FooHandler", "FooClient", "FooSyncClient", "FooCalls", "FooSyncCalls"),
        (
            "FooSyncMethods",
            "FooSyncHandler",
            "FooSyncClient_",
            "FooSyncSyncClient",
            "FooSyncCalls_",
            "FooSyncSyncCalls",
        ),
        *(
            tuple(f"{n}{suffix}" for suffix in naming.SERVICE_SUFFIXES)
            for n in ("Nothing", "Item_")
        ),
    ]
    assert issubclass(module.FooSyncClient, micro.SyncStub)
    assert issubclass(module.FooSyncClient_, micro.Stub)
    assert module.NothingHandler.__service__.methods == ()


# -- docstrings -----------------------------------------------------------------------

QUOTED = (
    'He said "hello" and \'goodbye\'; """triple""" and \'\'\' too.\n'
    "A Windows path C:\\temp\\new\\x41 and a regex \\d+\\s*\\\\ stay as written."
)


@pytest.mark.parametrize(
    ("service", "doc", "methods"),
    [
        (
            "Quoted",
            QUOTED,
            {
                "ends_with_quote": 'Ends with a quote: "',
                "ends_with_backslash": "Ends with a backslash \\",
                "triple_quotes": '"""Opens a docstring\n    and keeps its indentation;\n\n'
                'after a blank line, ends one: """',
                "block": "A block comment with {{ jinja }} and {% raw %} and \\u00e9 written "
                "out,\nand unicode: Grüße — ✓",
                "trailing": "A trailing comment: \"\"''\\\\",
            },
        ),
        ("Edge", 'Quotes only: """"""', {"quotes": '""'}),
    ],
)
def test_comments_become_docstrings_intact(
    corpus: Any, service: str, doc: str, methods: dict[str, str]
) -> None:
    module = corpus.comments_micro
    for suffix in ("Handler", "Client", "SyncClient"):
        cls = getattr(module, service + suffix)
        assert inspect.getdoc(cls) == doc
        assert {name: inspect.getdoc(getattr(cls, name)) for name in methods} == methods


def test_deprecation_is_documented(corpus: Any) -> None:
    module = corpus.options_micro
    assert (
        inspect.getdoc(module.PoliciesClient.old_read)
        == f"Superseded by Read.\n\n{DEPRECATED_NOTE}"
    )
    assert inspect.getdoc(module.LegacyHandler) == (
        f"Everything in here is deprecated.\n\n{DEPRECATED_NOTE}"
    )
    assert inspect.getdoc(module.LegacySyncClient.ping) == DEPRECATED_NOTE
    assert module.PoliciesHandler.read.__doc__ == "Reads only: safe to repeat."


def test_methods_without_comments_have_no_docstring(corpus: Any) -> None:
    module = corpus.keywords_micro
    assert module.RangeHandler.range.__doc__ is None
    assert module.RangeClient.float.__doc__ is None
    assert inspect.getdoc(module.RangeHandler) == (
        "A service named after a builtin; its methods shadow builtins too."
    )


# -- calls ----------------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[micro.Client]:
    async with micro.Client() as c:
        yield c


def _stubs(module: ModuleType, service: str, client: micro.Client, address: str) -> Any:
    options = micro.CallOptions(address=address)
    name = getattr(module, f"{service}Handler").__service__.name
    return (
        getattr(module, f"{service}Client")(name, client, options=options),
        getattr(module, f"{service}SyncClient")(name, client, options=options),
    )


async def test_deprecated_methods_warn_at_the_callers_line(
    corpus: Any, client: micro.Client
) -> None:
    pb2 = corpus.options_pb2
    key, value = pb2.Key(id="k"), pb2.Value(id="v")

    class Policies(corpus.options_micro.PoliciesHandler):
        async def old_read(self, request: Any, ctx: micro.Context) -> Any:
            return value

        async def old_watch(self, request: Any, ctx: micro.Context) -> AsyncIterator[Any]:
            yield value

        async def old_upload(self, requests: AsyncIterator[Any], ctx: micro.Context) -> Any:
            return pb2.Key(id=",".join([r.id async for r in requests]))

        async def old_sync(self, requests: AsyncIterator[Any], ctx: micro.Context) -> Any:
            async for request in requests:
                yield request

    class Legacy(corpus.options_micro.LegacyHandler):
        async def ping(self, request: Any, ctx: micro.Context) -> Any:
            return request

    async with serving(Policies(), Legacy()) as address:
        stub, sync_stub = _stubs(corpus.options_micro, "Policies", client, address)
        legacy, sync_legacy = _stubs(corpus.options_micro, "Legacy", client, address)

        calls: list[tuple[str, Callable[[], Awaitable[Any]], Any]] = [
            ("Policies/OldRead", lambda: stub.old_read(key), value),
            ("Policies/OldWatch", lambda: collect(stub.old_watch(key)), [value]),
            ("Policies/OldUpload", lambda: stub.old_upload([value, value]), pb2.Key(id="v,v")),
            ("Policies/OldSync", lambda: collect(stub.old_sync([value])), [value]),
            ("Legacy/Ping", lambda: legacy.ping(key), key),
        ]
        for name, call, want in calls:
            with pytest.warns(DeprecationWarning, match=deprecated(name)) as caught:
                got = await call()
            assert got == want
            assert [w.filename for w in caught] == [__file__]

        def blocking() -> None:
            sync_calls: list[tuple[str, Callable[[], Any], Any]] = [
                ("Policies/OldRead", lambda: sync_stub.old_read(key), value),
                ("Policies/OldWatch", lambda: list(sync_stub.old_watch(key)), [value]),
                ("Policies/OldUpload", lambda: sync_stub.old_upload([value]), pb2.Key(id="v")),
                ("Policies/OldSync", lambda: list(sync_stub.old_sync(iter([value]))), [value]),
                ("Legacy/Ping", lambda: sync_legacy.ping(key), key),
            ]
            for name, call, want in sync_calls:
                with pytest.warns(DeprecationWarning, match=deprecated(name)) as caught:
                    got = call()
                assert got == want
                assert [w.filename for w in caught] == [__file__]

        await asyncio.to_thread(blocking)


def deprecated(name: str) -> str:
    return f"^/corpus\\.options\\.{name} is deprecated$"


async def collect(replies: AsyncIterator[Any]) -> list[Any]:
    return await collect_into([], replies)


async def collect_into(received: list[Any], replies: AsyncIterator[Any]) -> list[Any]:
    async for reply in replies:
        received.append(reply)
    return received


async def test_unimplemented_methods_answer_unimplemented(
    corpus: Any, client: micro.Client
) -> None:
    pb2 = corpus.streaming_pb2
    note = pb2.Note(text="x")

    class OnlyUnary(corpus.streaming_micro.StreamerHandler):
        async def unary(self, request: Any, ctx: micro.Context) -> Any:
            return request

    async with serving(OnlyUnary(), corpus.multi_micro.NothingHandler()) as address:
        stub, sync_stub = _stubs(corpus.streaming_micro, "Streamer", client, address)
        assert await stub.unary(note) == note

        def missing(name: str) -> Any:
            return pytest.raises(
                errors.Unimplemented, match=f"/corpus.streaming.Streamer/{name} is not implemented"
            )

        with missing("ServerStream"):
            _ = [n async for n in stub.server_stream(note)]
        with missing("ClientStream"):
            await stub.client_stream([note])
        with missing("BidiStream"):
            _ = [n async for n in stub.bidi_stream([note])]

        def blocking() -> None:
            assert sync_stub.unary(note) == note
            with missing("ServerStream"):
                list(sync_stub.server_stream(note))
            with missing("ClientStream"):
                sync_stub.client_stream(iter([note]))
            with missing("BidiStream"):
                list(sync_stub.bidi_stream(iter([note])))

        await asyncio.to_thread(blocking)

        # A service the server does not serve at all is UNIMPLEMENTED too.
        foo = corpus.multi_micro.FooClient(
            "corpus.multi.Foo", client, options=micro.CallOptions(address=address)
        )
        with pytest.raises(errors.Unimplemented):
            await foo.get(corpus.multi_pb2.Item(), timeout=TIMEOUT)


async def test_def_handlers_run_in_worker_threads(corpus: Any, client: micro.Client) -> None:
    pb2 = corpus.streaming_pb2
    threads: set[bool] = set()
    users: list[str | bytes] = []

    class Blocking(corpus.streaming_micro.StreamerHandler):
        def unary(self, request: Any, ctx: micro.Context) -> Any:
            threads.add(threading.current_thread() is threading.main_thread())
            users.append(ctx.metadata["x-user"])
            return pb2.Note(text=request.text.upper(), seq=request.seq + 1)

        def server_stream(self, request: Any, ctx: micro.Context) -> Iterator[Any]:
            threads.add(threading.current_thread() is threading.main_thread())
            return iter([pb2.Note(seq=i) for i in range(request.seq)])

        def client_stream(self, requests: Iterator[Any], ctx: micro.Context) -> Any:
            threads.add(threading.current_thread() is threading.main_thread())
            seqs = [r.seq for r in requests]
            return pb2.Tally(notes=len(seqs), mean_seq=sum(seqs) / len(seqs))

        def bidi_stream(self, requests: Iterator[Any], ctx: micro.Context) -> Iterator[Any]:
            threads.add(threading.current_thread() is threading.main_thread())
            for request in requests:
                yield pb2.Tally(notes=request.seq)

    notes = [pb2.Note(seq=s) for s in (1, 2, 6)]
    want = (
        pb2.Note(text="HI", seq=8),
        [pb2.Note(seq=i) for i in range(3)],
        pb2.Tally(notes=3, mean_seq=3.0),
        [pb2.Tally(notes=s) for s in (1, 2, 6)],
    )
    async with serving(Blocking()) as address:
        stub, sync_stub = _stubs(corpus.streaming_micro, "Streamer", client, address)
        got = (
            await stub.unary(pb2.Note(text="hi", seq=7), metadata={"x-user": "ann"}),
            [n async for n in stub.server_stream(pb2.Note(seq=3))],
            await stub.client_stream(notes),
            [t async for t in stub.bidi_stream(notes)],
        )
        assert got == want

        def blocking() -> tuple[Any, ...]:
            return (
                sync_stub.unary(pb2.Note(text="hi", seq=7), metadata=[("x-user", "bob")]),
                list(sync_stub.server_stream(pb2.Note(seq=3))),
                sync_stub.client_stream(iter(notes)),
                list(sync_stub.bidi_stream(iter(notes))),
            )

        assert await asyncio.to_thread(blocking) == want
    assert threads == {False}
    assert users == ["ann", "bob"]


async def test_an_async_handler_reading_requests_with_for_is_told_how(
    corpus: Any, client: micro.Client
) -> None:
    """``micro.Requests`` reads both ways, each where it can work: ``for`` on the event
    loop would block it, so it says to use ``async for``, and the caller gets a bare
    INTERNAL as for any handler bug."""
    pb2 = corpus.streaming_pb2
    seen: list[str] = []

    class Confused(corpus.streaming_micro.StreamerHandler):
        async def client_stream(self, requests: micro.Requests[Any], ctx: micro.Context) -> Any:
            try:
                return pb2.Tally(notes=len(list(requests)))
            except TypeError as e:
                seen.append(str(e))
                raise

    async with serving(Confused()) as address:
        stub, _ = _stubs(corpus.streaming_micro, "Streamer", client, address)
        with pytest.raises(errors.Internal):
            await stub.client_stream([pb2.Note(seq=1)])
    assert seen == ["read the request stream with `async for` in an async handler"]


async def test_handler_errors_reach_the_caller_typed(corpus: Any, client: micro.Client) -> None:
    pb2 = corpus.streaming_pb2

    class Missing(corpus.streaming_micro.StreamerHandler):
        async def unary(self, request: Any, ctx: micro.Context) -> Any:
            raise errors.NotFound(f"no note {request.seq}")

        async def server_stream(self, request: Any, ctx: micro.Context) -> AsyncIterator[Any]:
            yield pb2.Note(seq=1)
            raise errors.NotFound("no second note")

        async def client_stream(self, requests: AsyncIterator[Any], ctx: micro.Context) -> Any:
            async for _ in requests:
                raise errors.NotFound("no tally")
            return pb2.Tally()

        def bidi_stream(self, requests: Iterator[Any], ctx: micro.Context) -> Iterator[Any]:
            raise errors.NotFound("no chat")

    async with serving(Missing()) as address:
        stub, sync_stub = _stubs(corpus.streaming_micro, "Streamer", client, address)
        with pytest.raises(errors.NotFound, match="no note 7") as raised:
            await stub.unary(pb2.Note(seq=7))
        assert raised.value.code is grpc.StatusCode.NOT_FOUND
        assert not isinstance(raised.value, errors.ServiceNotFound)
        received: list[Any] = []
        with pytest.raises(errors.NotFound, match="no second note"):
            await collect_into(received, stub.server_stream(pb2.Note()))
        assert received == [pb2.Note(seq=1)]
        with pytest.raises(errors.NotFound, match="no tally"):
            await stub.client_stream([pb2.Note()])
        with pytest.raises(errors.NotFound, match="no chat"):
            _ = [t async for t in stub.bidi_stream([pb2.Note()])]

        def blocking() -> None:
            with pytest.raises(errors.NotFound, match="no note 3"):
                sync_stub.unary(pb2.Note(seq=3))
            with pytest.raises(errors.NotFound, match="no second note"):
                list(sync_stub.server_stream(pb2.Note()))
            with pytest.raises(errors.NotFound, match="no tally"):
                sync_stub.client_stream(iter([pb2.Note()]))
            with pytest.raises(errors.NotFound, match="no chat"):
                list(sync_stub.bidi_stream(iter([pb2.Note()])))

        await asyncio.to_thread(blocking)
