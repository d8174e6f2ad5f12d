"""Misuse of generated modules that ``mypy --strict`` must reject: each line marked
``# E: <code>`` fails with that error code, and no other line fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

from corpus import streaming_micro, streaming_pb2

import micro

Note = streaming_pb2.Note
Tally = streaming_pb2.Tally
Notes = AsyncIterator[Note]


class WrongRequest(streaming_micro.StreamerHandler):
    async def unary(self, request: Tally, ctx: micro.Context) -> Note:  # E: override
        return Note()


class WrongReply(streaming_micro.StreamerHandler):
    async def client_stream(self, requests: Notes, ctx: micro.Context) -> Note:  # E: override
        return Note()


class WrongBlockingReply(streaming_micro.StreamerHandler):
    def unary(self, request: Note, ctx: micro.Context) -> Tally:  # E: override
        return Tally()

    def server_stream(self, request: Note, ctx: micro.Context) -> list[Note]:  # E: override
        return [request]


async def notes() -> AsyncIterator[Note]:
    yield Note()


async def misuse(client: micro.Client) -> None:
    stub = streaming_micro.StreamerClient("streamer", client)
    await stub.unary(Tally())  # E: arg-type
    tally: Tally = await stub.unary(Note())  # E: assignment
    await stub.unary(Note(), 1.0)  # E: call-arg
    await stub.server_stream(Note())  # E: misc
    await stub.client_stream(Note())  # E: arg-type
    await stub.unary(Note(), timeout="soon")  # E: arg-type
    print(tally)


def misuse_blocking(client: micro.Client) -> None:
    stub = streaming_micro.StreamerSyncClient("streamer", client)
    stub.client_stream(notes())  # E: arg-type
    reply: Tally = stub.unary(Note())  # E: assignment
    print(reply)


async def misuse_handles(client: micro.Client) -> None:
    calls = streaming_micro.StreamerCalls("streamer", client)
    await calls.unary(Note()).write(Note())  # E: attr-defined
    await calls.bidi_stream().write(Tally())  # E: arg-type
    reply: Tally = await calls.unary(Note())  # E: assignment
    print(reply)
    sync = streaming_micro.StreamerSyncCalls("streamer", client)
    note: Tally = sync.unary(Note()).result()  # E: assignment
    print(note)
