"""The zero-setup default broker: no broker server, only the services themselves.

A subscribing service serves ``micro.Delivery`` on its own gRPC server and registers
one registry entry per (topic, queue) it listens on, named ``micro.broker.<topic>``.
A publisher looks those entries up (through the cached registry) and calls them:
every broadcast entry, and one entry per queue (another one if that fails).

Delivery: at most once across a crash (messages live only in the receiving process),
at least once while it lives (a failing handler gets the message again after a
backoff, then ``<topic>.dlq``); no ordering. A receiver drops ids it has just seen, so
a retried call does not deliver twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import itertools
import logging
import random
from collections.abc import Awaitable

from micro import errors
from micro.broker.base import BrokerError, Envelope, NotConnected, RawHandler
from micro.broker.redelivery import Listener, Redelivery, start
from micro.client import CallOptions, Client
from micro.context import Context
from micro.delivery_micro import DeliveryClient, DeliveryHandler
from micro.delivery_pb2 import Delivered
from micro.delivery_pb2 import Envelope as WireEnvelope
from micro.registry import Node, Registry, RegistryError, Service
from micro.tls import TLS_KEY

log = logging.getLogger("micro.broker")

DELIVERY_TIMEOUT = 5.0  # seconds a publisher waits for a subscriber's server to take a message
REMEMBERED_IDS = 10_000  # recent message ids a receiver keeps to drop duplicates


def entry_name(topic: str) -> str:
    return f"micro.broker.{topic}"


class _Receiver(DeliveryHandler):
    def __init__(self, broker: GrpcBroker) -> None:
        self.broker = broker

    async def deliver(self, request: WireEnvelope, ctx: Context) -> Delivered:
        if not self.broker._accept(request):
            queue = f" (queue {request.queue!r})" if request.queue else ""
            raise errors.NotFound(f"no subscription to {request.topic}{queue} here")
        return Delivered()


class GrpcBroker:
    """``Broker`` over the services' own gRPC servers; a ``Service`` serves its
    ``handler`` and ``bind``s it to its address when it starts."""

    def __init__(
        self,
        registry: Registry,
        *,
        max_attempts: int = 5,
        backoff: float = 0.05,
        register_ttl: float = 30.0,
        register_interval: float = 10.0,
    ) -> None:
        self.registry = registry
        self.redelivery = Redelivery(max_attempts, backoff)
        self.register_ttl = register_ttl
        self.register_interval = register_interval
        self.handler = _Receiver(self)
        self._client: Client | None = None
        self._owns_client = False
        self._address: str | None = None
        self._labels: dict[str, str] = {}  # on its registry entries' nodes
        self._node_id = ""
        self._subscriptions: dict[str, list[Listener]] = collections.defaultdict(list)
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._heartbeat: asyncio.Task[None] | None = None
        self._unheard: set[str] = set()  # topics published to without a subscriber

    def bind(
        self, address: str, node_id: str, client: Client, *, tls_name: str | None = None
    ) -> None:
        """Receive at ``address`` (the service's server), as ``node_id``; ``tls_name``:
        the server speaks TLS only, with a certificate naming that service."""
        self._address, self._node_id, self._client = address, node_id, client
        self._labels = {} if tls_name is None else {TLS_KEY: tls_name}

    async def connect(self) -> None:
        if self._client is None:  # publishing only, without a service
            self._client = Client(self.registry)
            self._owns_client = True

    # -- publishing ---------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        client = self._ready()
        try:
            entries = await client.registry.get_service(entry_name(envelope.topic))
        except RegistryError as e:
            raise BrokerError(f"cannot find subscribers of {envelope.topic}: {e}") from None
        groups: dict[str, list[Node]] = collections.defaultdict(list)
        for entry in entries:
            for node in entry.nodes:
                groups[node.metadata.get("queue", "")].append(node)
        if not groups:
            if envelope.topic not in self._unheard:  # said once, until one subscribes
                self._unheard.add(envelope.topic)
                log.warning(
                    "no subscriber of %s found: message %s not delivered (nor later ones "
                    "until one subscribes)",
                    envelope.topic,
                    envelope.id,
                )
            return
        self._unheard.discard(envelope.topic)
        sends: list[Awaitable[object]] = [
            self._send(client, node, envelope, "") for node in groups.pop("", ())
        ]
        sends += [self._send_one(client, nodes, envelope, q) for q, nodes in groups.items()]
        await asyncio.gather(*sends)

    async def _send_one(
        self, client: Client, nodes: list[Node], envelope: Envelope, queue: str
    ) -> None:
        """To one member of ``queue``, trying the others if it cannot take it."""
        for node in random.sample(nodes, len(nodes)):
            if await self._send(client, node, envelope, queue):
                return
        raise BrokerError(f"no subscriber of {envelope.topic} (queue {queue!r}) is reachable")

    async def _send(self, client: Client, node: Node, envelope: Envelope, queue: str) -> bool:
        stub = DeliveryClient(entry_name(envelope.topic), client)
        wire = WireEnvelope(
            id=envelope.id,
            topic=envelope.topic,
            content_type=envelope.content_type,
            timestamp=envelope.timestamp,
            headers=envelope.headers,
            body=envelope.body,
            queue=queue,
        )
        try:
            await stub.deliver(
                wire, timeout=DELIVERY_TIMEOUT, options=CallOptions(address=node.address)
            )
        except errors.Error as e:
            log.warning(
                "could not deliver %s of %s to %s: %s", envelope.id, envelope.topic, node.address, e
            )
            return False
        return True

    # -- receiving ----------------------------------------------------------------

    async def subscribe(
        self, topic: str, handler: RawHandler, queue: str | None = None
    ) -> Listener:
        if self._address is None:
            raise BrokerError(
                "the grpc broker receives on a service's own server: subscribe through "
                "micro.Service (or choose another broker with MICRO_BROKER)"
            )
        sub = Listener(topic, handler, queue, self._remove)
        self._subscriptions[topic].append(sub)
        await self.registry.register(self._entry(topic, queue), self.register_ttl)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._reregister())
        return sub

    def _entry(self, topic: str, queue: str | None) -> Service:
        labels = {"queue": queue or "", **self._labels}
        node = Node(f"{self._node_id}/{queue or '*'}", self._address or "", labels)
        return Service(entry_name(topic), nodes=(node,))

    def _entries(self) -> set[tuple[str, str | None]]:
        return {(s.topic, s.queue) for subs in self._subscriptions.values() for s in subs}

    async def _reregister(self) -> None:
        while True:
            await asyncio.sleep(self.register_interval)
            for topic, queue in self._entries():
                try:
                    await self.registry.register(self._entry(topic, queue), self.register_ttl)
                except RegistryError as e:
                    log.warning("subscription to %s not re-registered, will retry: %s", topic, e)

    async def _remove(self, sub: Listener) -> None:
        subs = self._subscriptions.get(sub.topic, [])
        if sub not in subs:
            return
        subs.remove(sub)
        if (sub.topic, sub.queue) not in self._entries():
            with contextlib.suppress(RegistryError):
                await self.registry.deregister(self._entry(sub.topic, sub.queue))

    def _accept(self, wire: WireEnvelope) -> bool:
        """Hand ``wire`` to its subscriptions here; False if there are none (a publisher
        whose registry cache is behind an unsubscribe tries another member)."""
        queue = wire.queue or None
        subs = [s for s in self._subscriptions.get(wire.topic, ()) if s.queue == queue]
        if not subs:
            return False
        key = f"{wire.topic}\n{wire.queue}\n{wire.id}"  # a dead letter keeps its id
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > REMEMBERED_IDS:
            self._seen.popitem(last=False)
        if queue is not None:
            turn = self._turns.setdefault((wire.topic, queue), itertools.count())
            subs = [subs[next(turn) % len(subs)]]
        envelope = Envelope(
            wire.topic, wire.body, wire.content_type, dict(wire.headers), wire.id, wire.timestamp
        )
        for sub in subs:
            # In a context of its own: the handler runs outside the Deliver call, so its
            # calls do not inherit that call's deadline and metadata (the publisher's
            # travel in the headers).
            work = self.redelivery.run(sub.handler, envelope, self.publish)
            sub.running.add(start(work, contextvars.Context()))
        return True

    def _ready(self) -> Client:
        if self._client is None:
            raise NotConnected("the grpc broker")
        return self._client

    async def close(self) -> None:
        for sub in [s for subs in self._subscriptions.values() for s in subs]:
            await sub.unsubscribe()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._owns_client and self._client is not None:
            await self._client.close()
        self._client = None
