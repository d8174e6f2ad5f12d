"""Code a user writes against generated modules: checked by ``mypy --strict`` together
with the generated corpus (never imported by the tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from corpus import keywords_micro, keywords_pb2, streaming_micro, streaming_pb2

import micro

Note = streaming_pb2.Note
Tally = streaming_pb2.Tally


class Streamer(streaming_micro.StreamerHandler):
    async def unary(self, request: Note, ctx: micro.Context) -> Note:
        return request

    async def server_stream(self, request: Note, ctx: micro.Context) -> AsyncIterator[Note]:
        yield request

    async def client_stream(self, requests: AsyncIterator[Note], ctx: micro.Context) -> Tally:
        return Tally(notes=len([r async for r in requests]))

    async def bidi_stream(
        self, requests: AsyncIterator[Note], ctx: micro.Context
    ) -> AsyncIterator[Tally]:
        async for request in requests:
            yield Tally(notes=request.seq)


class BlockingStreamer(streaming_micro.StreamerHandler):
    """``def`` methods, run in worker threads: typed as overrides too."""

    def unary(self, request: Note, ctx: micro.Context) -> Note:
        return request

    def server_stream(self, request: Note, ctx: micro.Context) -> Iterator[Note]:
        yield request

    def client_stream(self, requests: Iterator[Note], ctx: micro.Context) -> Tally:
        return Tally(notes=len(list(requests)))

    def bidi_stream(self, requests: micro.Requests[Note], ctx: micro.Context) -> Iterator[Tally]:
        for request in requests:
            yield Tally(notes=request.seq)


class Ranges(keywords_micro.RangeHandler):
    async def range(self, request: keywords_pb2.Fields, ctx: micro.Context) -> keywords_pb2.Fields:
        return keywords_pb2.Fields(range=request.range, type=request.type)

    async def float(
        self, requests: AsyncIterator[keywords_pb2.Fields], ctx: micro.Context
    ) -> keywords_pb2.Fields:
        return keywords_pb2.Fields(float="1.5")


async def notes() -> AsyncIterator[Note]:
    yield Note(text="a")


async def call(client: micro.Client) -> float:
    stub = streaming_micro.StreamerClient("streamer", client)
    note: Note = await stub.unary(Note(text="hi"), timeout=1.0, metadata={"x-user": "ann"})
    texts = [n.text async for n in stub.server_stream(note)]
    tally: Tally = await stub.client_stream([note, note])
    tally = await stub.client_stream(notes(), options=micro.CallOptions(retries=0))
    means = [t.mean_seq async for t in stub.bidi_stream(notes())]
    ranges = keywords_micro.RangeClient("range", client)
    fields = await ranges.range(keywords_pb2.Fields(), timeout=2.0)
    fields = await ranges.float([fields])
    print(texts, fields.float)
    return tally.notes + sum(means)


def call_blocking(client: micro.Client) -> int:
    stub = streaming_micro.StreamerSyncClient("streamer", client)
    note: Note = stub.unary(Note(text="hi"), timeout=1.0)
    tally: Tally = stub.client_stream(iter([note]))
    replies = [t.notes for t in stub.bidi_stream([note])]
    return len(list(stub.server_stream(note))) + tally.notes + sum(replies)


async def handles(client: micro.Client) -> int:
    calls = streaming_micro.StreamerCalls("streamer", client)
    unary = calls.unary(Note(text="hi"), options=micro.CallOptions(compression=None))
    note: Note = await unary
    headers: tuple[tuple[str, str | bytes], ...] = await unary.initial_metadata()
    bidi = calls.bidi_stream()  # written as it goes
    await bidi.write(note)
    await bidi.done_writing()
    tally: Tally | None = await bidi.read()
    uploads = calls.client_stream(notes())
    total: Tally = await uploads
    code = await uploads.code()
    print(headers, tally, code, await bidi.trailing_metadata(), bidi.cancel())
    return total.notes + len([n async for n in calls.server_stream(note)])


def handles_blocking(client: micro.Client) -> int:
    calls = streaming_micro.StreamerSyncCalls("streamer", client)
    future = calls.unary(Note(text="hi"))
    note: Note = future.result(timeout=1.0)
    bidi = calls.bidi_stream()
    bidi.write(note)
    bidi.done_writing()
    tallies = [t.notes for t in bidi]
    print(future.code(), bidi.details(), calls.client_stream([note]).cancel())
    return sum(tallies) + len(list(calls.server_stream(note)))
