"""Services served in-process on a real grpc server on loopback, an in-memory registry
and broker between them, and typed clients to call them: one block per test.

    async with Harness() as harness:
        await harness.serve("greeter", Greeter())
        greeter = harness.client(GreeterClient, "greeter")
        assert (await greeter.say_hello(HelloRequest(name="Ada"))).message == "Hello, Ada!"

Everything it started is stopped at the end of the block: services, their servers
and ports, the client's channels, the broker's deliveries. ``SyncHarness`` is the
same for plain (not async) tests, served from an event loop on a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from micro.broker import Publisher
from micro.client import Client
from micro.config import Config
from micro.registry import MemoryRegistry
from micro.server import Handler
from micro.service import Service
from micro.stub import Stub, SyncStub
from micro.testing.events import Delivery, RecordingBroker, decoded

M = TypeVar("M", bound=Message)
S = TypeVar("S", bound=Stub | SyncStub)
SS = TypeVar("SS", bound=SyncStub)
T = TypeVar("T")

WAIT = 30.0  # seconds a wait for events or a delivery takes before it fails the test
CALL_TIMEOUT = 60.0  # seconds for calls made without a timeout: a hung call fails

Factory = Callable[..., Service]
"""Builds a service from ``Service`` keyword arguments (``registry``, ``broker``,
``config``): a ``create_service(**options)`` of yours."""


class Harness:
    """In-process services with a memory registry and a broker that records (see
    module doc). ``config`` replaces the harness's own (memory registry and broker,
    loopback, a 60 s default call timeout); ``MICRO_*`` variables are not read."""

    def __init__(self, *, config: Config | None = None) -> None:
        self.config = config or Config(
            registry="memory", broker="memory", client_request_timeout=CALL_TIMEOUT
        )
        self.registry = MemoryRegistry()
        self.broker = RecordingBroker()
        self.services: list[Service] = []
        # What the clients it hands out call through; give it to a handler called
        # directly (micro.testing.context) that calls the services served here.
        self.caller = Client(self.registry, config=self.config)

    async def serve(self, service: str | Factory, *handlers: Handler, version: str = "") -> Service:
        """Start a service: ``serve("greeter", Greeter())`` serves handlers under a
        name; ``serve(create_service)`` the service your factory builds on the
        harness's registry, broker and config. Returns it, started."""
        if isinstance(service, str):
            built = Service(service, version=version, **self._options())
            built.handle(*handlers)
        else:
            if handlers:
                raise TypeError("serve(factory) takes no handlers: the factory adds its own")
            built = service(**self._options())
            if not isinstance(built, Service):
                raise TypeError(
                    f"serve({service!r}): the factory returned {built!r}, not a Service"
                )
        await built.start()
        self.services.append(built)
        return built

    def _options(self) -> dict[str, Any]:
        return {"registry": self.registry, "broker": self.broker, "config": self.config}

    def client(self, stub: type[S], name: str) -> S:
        """A generated client (``GreeterClient`` or ``GreeterSyncClient``) of the service
        registered as ``name``. A blocking one must not be called on the event loop
        the services run on: from an async test, call it through ``asyncio.to_thread``."""
        return stub(name, self.caller)

    def published(self, topic: str, kind: type[M]) -> list[M]:
        """The messages published on ``topic`` so far, as ``kind``, in order."""
        return decoded(self.broker.published, topic, kind)

    async def wait_published(
        self, topic: str, kind: type[M], count: int = 1, *, timeout: float = WAIT
    ) -> list[M]:
        """Until ``count`` messages have been published on ``topic``; all of them."""

        def seen() -> int:
            return sum(e.topic == topic for e in self.broker.published)

        await self.broker.until(
            lambda: seen() >= count,
            timeout,
            lambda: f"{count} message(s) on {topic}, {seen()} published",
        )
        return self.published(topic, kind)

    async def deliver(
        self,
        topic: str,
        message: Message,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = WAIT,
    ) -> Delivery:
        """Publish ``message`` to the one subscriber of ``topic`` (or one queue's) and
        wait until it has been acked or given up (dead-lettered, its dead letter
        published): what became of it, after how many attempts."""
        receivers = self.broker.receivers(topic)
        if receivers != 1:
            raise LookupError(
                f"deliver({topic!r}) needs exactly one subscriber (or queue) of the topic, "
                f"and it has {receivers}: serve the service that subscribes first, or use "
                "wait_published for a message many receive"
            )
        sent = await Publisher(self.broker, topic, type(message)).publish(message, headers)
        await self.broker.until(
            lambda: self.broker.settled(sent, receivers),
            timeout,
            lambda: (
                f"the subscriber of {topic} handling message {sent} "
                f"(so far: {self.broker.deliveries(sent)})"
            ),
        )
        return self.broker.deliveries(sent)[0]

    async def close(self) -> None:
        """Stop every service (the last served first), then the client and broker."""
        services, self.services = self.services, []
        for service in reversed(services):
            await service.stop(grace=0)
        await self.caller.close()
        await self.broker.close()
        await self.registry.close()

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SyncHarness:
    """``Harness`` for plain tests: the same methods, blocking; services run on an
    event loop in a thread of the harness's own, stopped with it.

    with SyncHarness() as harness:
        harness.serve("greeter", Greeter())
        greeter = harness.client(GreeterSyncClient, "greeter")
    """

    def __init__(self, *, config: Config | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="micro-testing", daemon=True
        )
        self._thread.start()
        self.harness = self._run(_made(config))

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def serve(self, service: str | Factory, *handlers: Handler, version: str = "") -> Service:
        return self._run(self.harness.serve(service, *handlers, version=version))

    def client(self, stub: type[SS], name: str) -> SS:
        """A generated blocking client (``GreeterSyncClient``) of the service ``name``."""
        return self.harness.client(stub, name)

    def published(self, topic: str, kind: type[M]) -> list[M]:
        return self.harness.published(topic, kind)

    def wait_published(
        self, topic: str, kind: type[M], count: int = 1, *, timeout: float = WAIT
    ) -> list[M]:
        return self._run(self.harness.wait_published(topic, kind, count, timeout=timeout))

    def deliver(
        self,
        topic: str,
        message: Message,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = WAIT,
    ) -> Delivery:
        return self._run(self.harness.deliver(topic, message, headers=headers, timeout=timeout))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self.harness.close())
        finally:
            # Threads that asyncio.to_thread started on this loop end with it, as
            # asyncio.run ends them.
            self._run(self._loop.shutdown_default_executor())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _made(config: Config | None) -> Harness:
    """A harness made on the loop that will run it."""
    return Harness(config=config)
