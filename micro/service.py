"""``Service``: the composition root — server, registration, client — and its lifecycle.

start: bind → health SERVING → register (TTL, re-registered every interval).
stop (or SIGTERM/SIGINT under ``run``): health NOT_SERVING → deregister → serve on
until callers have moved on → drain calls in flight → stop the server → close client
and registry, all within ``grace`` seconds. The node leaves the registry before the
server stops taking calls, and keeps taking them until none has arrived for ``QUIET``
seconds (half the grace at most): a caller whose registry cache has not yet seen the
deregistration is served, not refused, so nothing it sends fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message

from micro.broker import Broker, Publisher, Subscription, typed
from micro.broker import from_config as broker_from_config
from micro.broker.events import EventHandler
from micro.broker.peer import GrpcBroker
from micro.client import Client
from micro.config import MAX_MESSAGE_SIZE, Config, host_port
from micro.middleware import Middleware
from micro.middleware.metrics import Metrics
from micro.middleware.observe import observing
from micro.registry import Endpoint, Node, ReadOnly, Registry, RegistryError
from micro.registry import Service as Record
from micro.registry import from_config as registry_from_config
from micro.server import Handler, Server
from micro.tls import TLS_KEY, Tls, TlsError

if TYPE_CHECKING:
    from micro.middleware.auth import Auth

log = logging.getLogger("micro.service")

QUIET = 0.25  # seconds without a new call after which a stopping node's callers moved on

M = TypeVar("M", bound=Message)
H = TypeVar("H", bound=EventHandler)


class Service:
    """A named, discoverable service.

    svc = micro.Service("greeter", version="1.2.0", registry=registry)
    svc.handle(MyGreeter())
    await svc.start(); ...; await svc.stop()      # or svc.run(): blocks until a signal

    Arguments left out come from ``MICRO_*`` variables (``MICRO_REGISTRY``,
    ``MICRO_SERVER_ADDRESS``, ``MICRO_SERVER_ADVERTISE`` (``advertise``: the host[:port]
    registered, for a bind others cannot reach as it is), ``MICRO_REGISTER_TTL``,
    ``MICRO_REGISTER_INTERVAL``,
    ``MICRO_SERVER_THREADS`` (``threads``: ``def`` handler calls at once),
    ``MICRO_SERVER_MAX_CALLS``: calls in progress beyond which more are refused at once,
    for clients to send elsewhere), ``MICRO_TLS_CERT``/``_KEY``/``_CA`` (TLS, mutual with
    a CA; the certificate must name the service), ``MICRO_REFLECTION=0`` (no reflection).

    ``middleware`` hooks the server's handlers, the client's calls and the service's
    publishers and subscribers, in the order given (``micro.Middleware``), after the
    observability built in (``micro.middleware.observe``): OpenTelemetry tracing and
    metrics when it is installed, Prometheus ``/metrics`` served on
    ``MICRO_METRICS_ADDRESS`` (``metrics_address``; ``self.metrics``), an access log with
    ``MICRO_ACCESS_LOG=1``. A ready
    ``server`` or ``client`` may be given instead of the one built here, with every
    option of its own (and its own middleware)::

        svc = micro.Service("greeter", server=micro.Server(max_calls=100),
                            client=micro.Client(retries=0), registry=registry)
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "",
        metadata: Mapping[str, str] | None = None,
        address: str | None = None,
        advertise: str | None = None,
        registry: Registry | None = None,
        broker: Broker | None = None,
        register_ttl: float | None = None,
        register_interval: float | None = None,
        grace: float = 30.0,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_calls: int | None = None,
        threads: int | None = None,
        middleware: Sequence[Middleware] = (),
        metrics_address: str | None = None,
        server: Server | None = None,
        client: Client | None = None,
        config: Config | None = None,
    ) -> None:
        if not name:
            raise ValueError("a service needs a name")
        self.config = (config or Config.from_env()).given(
            server_address=address,
            server_advertise=advertise,
            register_ttl=register_ttl,
            register_interval=register_interval,
            server_max_calls=max_calls,
            server_threads=threads,
            metrics_address=metrics_address,
        )
        self.name = name
        self.version = version
        self.metadata = dict(metadata or {})
        self.grace = grace
        self.id = f"{name}-{uuid.uuid4().hex}"
        self._owns_registry = registry is None
        self.tls = Tls.from_config(self.config)
        if self.tls is not None:
            if not self.tls.serves:
                raise TlsError(
                    f"service {name!r}: MICRO_TLS_CA is set but not MICRO_TLS_CERT and "
                    "MICRO_TLS_KEY; its callers verify it against that CA, so it needs a "
                    "certificate naming it"
                )
            self.tls.check_name(name)
        self.auth = _auth(self.config)
        self.registry = registry or registry_from_config(self.config)
        middleware = self.middleware = observing(self.config, name, middleware)
        self.metrics = next((m for m in middleware if isinstance(m, Metrics)), None)
        self.server = server or Server(
            self.config.server_address,
            max_message_size=max_message_size,
            max_calls=self.config.server_max_calls,
            threads=self.config.server_threads,
            reflection=self.config.reflection,
            tls=self.tls,
            guard=None if self.auth is None else self.auth.check,
            # auth last: the user's hooks (tracing, logs) see the calls it refuses
            middleware=(*middleware, *(() if self.auth is None else (self.auth,))),
        )
        self.broker = broker or broker_from_config(self.config, self.registry)
        self._owns_broker = broker is None and self.config.broker != "memory"
        if isinstance(self.broker, GrpcBroker):
            self.server.add(self.broker.handler)  # subscribers receive on this server
        self.client = client or Client(
            self.registry, middleware=middleware, config=self.config, tls=self.tls
        )
        self.address = ""
        self._record: Record | None = None
        self._registered = False  # in the registry (not where it only discovers)
        self._heartbeat: asyncio.Task[None] | None = None
        self.handlers: list[Handler] = []  # what the registry advertises
        self._event_handlers: list[tuple[str, str | None, EventHandler]] = []
        self._subscriptions: list[Subscription] = []

    def handle(self, *handlers: Handler) -> None:
        """Serve these generated-handler subclasses (before ``start``)."""
        self.server.add(*handlers)
        self.handlers.extend(handlers)

    def publisher(
        self, topic: str, kind: type[M], *, content_type: str | None = None
    ) -> Publisher[M]:
        """A typed publisher: ``await svc.publisher("user.created", UserCreated).publish(m)``."""
        if content_type is None:
            return Publisher(self.broker, topic, kind, middleware=self.middleware)
        return Publisher(
            self.broker, topic, kind, content_type=content_type, middleware=self.middleware
        )

    def subscribe(self, topic: str, *, queue: str | None = None) -> Callable[[H], H]:
        """Decorate a handler ``(event: UserCreated, ctx: micro.EventContext)``: called for
        each message from ``start`` on. Handlers sharing a ``queue`` split the messages."""

        def register(handler: H) -> H:
            typed(handler)  # a missing or wrong annotation fails here, not at delivery
            self._event_handlers.append((topic, queue, handler))
            return handler

        return register

    @property
    def record(self) -> Record:
        """This node as the registry shows it."""
        if self._record is None:
            raise RuntimeError(f"service {self.name!r} is not started")
        return self._record

    async def start(self) -> None:
        bound = await self.server.start()
        if self.metrics is not None and self.config.metrics_address:
            self.metrics.serve(self.config.metrics_address)
        self.address = _advertised(bound, self.config.server_advertise)
        self._record = Record(
            name=self.name,
            version=self.version,
            metadata=self.metadata,
            endpoints=tuple(
                Endpoint(
                    name=m.path[1:].replace("/", "."),
                    request=m.request.DESCRIPTOR.full_name,
                    response=m.response.DESCRIPTOR.full_name,
                    metadata={"kind": m.kind},
                )
                for handler in self.handlers
                for m in handler.__service__.methods
            ),
            nodes=(Node(self.id, self.address, self._node_metadata()),),
        )
        try:
            await self._register()
            if isinstance(self.broker, GrpcBroker):
                name = None if self.tls is None else self.name
                self.broker.bind(self.address, self.id, self.client, tls_name=name)
            await self.broker.connect()
            for topic, queue, handler in self._event_handlers:
                deliver = typed(handler, queue=queue, middleware=self.middleware)
                subscription = await self.broker.subscribe(topic, deliver, queue)
                self._subscriptions.append(subscription)
        except BaseException:  # an unreachable broker, say: leave nothing half started
            await self.stop(grace=0)
            raise
        if self._registered:
            self._heartbeat = asyncio.get_running_loop().create_task(self._reregister())
        log.info("%s %s serving on %s as %s", self.name, self.version, self.address, self.id)

    def _node_metadata(self) -> dict[str, str]:
        """The node's labels, its protocol, and whether it speaks TLS only (so clients
        never try it in plaintext), naming what its certificate names."""
        labels = {**self.metadata, "protocol": "grpc"}
        if self.tls is not None:
            labels[TLS_KEY] = self.name
        return labels

    async def _register(self) -> None:
        try:
            await self.registry.register(self.record, self.config.register_ttl)
        except ReadOnly:
            log.info("%s: %r only discovers; DNS publishes this instance", self.id, self.registry)
            return
        except RegistryError as e:
            raise RegistryError(f"service {self.name!r} could not register: {e}") from None
        self._registered = True

    async def _reregister(self) -> None:
        """Refresh the registration before its TTL runs out; ride out registry
        outages (the next refresh registers again)."""
        failing = False
        while True:
            await asyncio.sleep(self.config.register_interval)
            try:
                await self.registry.register(self.record, self.config.register_ttl)
            except Exception as e:  # a backend's bug, too, must not end the heartbeat
                if not failing:
                    bug = not isinstance(e, RegistryError)
                    log.warning(
                        "%s: re-registration failed, will retry: %s", self.id, e, exc_info=bug
                    )
                failing = True
            else:
                if failing:
                    log.warning("%s: registered again", self.id)
                failing = False

    async def stop(self, grace: float | None = None) -> None:
        """Leave the registry, serve until callers have moved on, finish calls in
        flight, stop serving, close client and registry: ``grace`` seconds in all
        (default the service's)."""
        if self._record is None:
            return
        grace = self.grace if grace is None else grace
        deadline = time.monotonic() + grace
        await self.server.not_serving()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._registered:
            self._registered = False
            try:
                await self.registry.deregister(self._record)
            except RegistryError as e:
                log.warning("%s: could not deregister (its TTL will expire it): %s", self.id, e)
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:  # each returns once its handlers finished
            await subscription.unsubscribe()
        await self.server.quiesce(QUIET, min(grace / 2, deadline - time.monotonic()))
        await self.server.stop(max(0.0, deadline - time.monotonic()))
        self._record = None
        if self._owns_broker:
            await self.broker.close()
        await self.client.close()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        if self._owns_registry:
            await self.registry.close()
        log.info("%s stopped", self.id)

    async def serve(self, *, announce: bool = False) -> None:
        """Start (unless started), serve until SIGTERM or SIGINT, then stop gracefully.
        ``announce``: say on stderr where it serves and what it found it by, and when
        it has stopped (``run`` does)."""
        # Signals are caught from the start: a SIGTERM while starting, or just after
        # the announcement, is a graceful stop too.
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, stopping.set)
        try:
            if self._record is None:
                await self.start()
            if announce:
                _say(
                    f"{self.name} {self.version or '(no version)'} serving on {self.address} "
                    f"as {self.id}; registry {_shown(self.registry)}, broker {_shown(self.broker)}"
                )
            await stopping.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.stop()
        if announce:
            _say(f"{self.id} stopped")

    def run(self) -> None:
        """``serve`` on a new event loop, announced: the entry point of a service process."""
        if self.config.log_level and not logging.getLogger().handlers:
            logging.basicConfig(level=self.config.log_level)
        asyncio.run(self.serve(announce=True))


def _auth(config: Config) -> Auth | None:
    """The auth ``MICRO_AUTH_*`` asks for (imported only then: PyJWT is an extra)."""
    if config.auth_public_key is None and config.auth_token is None:
        return None
    from micro.middleware.auth import Auth

    return Auth.from_config(config)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _shown(part: object) -> str:
    """A registry or broker as the start line names it: its own repr where it has one
    (where it connects; never credentials), else its class."""
    if type(part).__repr__ is object.__repr__:
        return type(part).__name__
    return repr(part)


def _advertised(bound: str, advertise: str | None) -> str:
    """The address others reach a server on: ``advertise`` (its host, and its port if
    it has one), else the bound address, where a wildcard bind gives a routable
    address of this host."""
    host, _, port = bound.rpartition(":")
    if advertise is not None:
        host, given = host_port(advertise)
        port = str(given) if given is not None else port
    elif host in ("0.0.0.0", "[::]", "::", ""):
        host = routable(_own_addresses()) or ""
        if not host:
            host = "127.0.0.1"
            log.warning(
                "no routable address found for the wildcard bind %s: advertising %s:%s;"
                " set MICRO_SERVER_ADVERTISE",
                bound,
                host,
                port,
            )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def routable(addresses: Iterable[str]) -> str | None:
    """The first of ``addresses`` another host can reach: not loopback, link-local,
    unspecified or multicast, IPv4 before IPv6 (a ``[::]`` bind takes both)."""
    usable = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast):
            usable.append(ip)
    usable.sort(key=lambda ip: ip.version)  # stable: the order given within a family
    return str(usable[0]) if usable else None


def _own_addresses() -> list[str]:
    """This host's addresses, the one its default route leaves from first (a UDP
    socket's connect sends nothing; it only picks the outgoing interface)."""
    found: list[str] = []
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # documentation addresses (RFC 5737, RFC 3849)
            found.append(s.getsockname()[0])
    with contextlib.suppress(OSError):  # then what the host name resolves to
        found += [str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None)]
    return found
