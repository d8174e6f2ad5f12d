"""The client: routing, plans and lifecycle — the call pipeline's owner.

select → channel → invoke → classify → retry. ``Client`` resolves a service name
through the cached registry into a ``Route`` (filtered nodes and a strategy); its
``Pool`` (``micro.pool``) keeps one channel per node address; a ``Plan``
(``micro.plan``) decides each attempt. A ``Call`` holds one call's plan, its
middleware and the bookkeeping of each attempt, so the drivers in ``micro.stub``
(async and blocking) only do the I/O it names.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from micro import errors
from micro.config import MAX_MESSAGE_SIZE, Config
from micro.context import inbound
from micro.method import Method
from micro.middleware import ClientAttempt, ClientCall, Middleware, Outcome
from micro.middleware.base import SUCCEEDED, Endings, begin, chain, end, failed
from micro.plan import DEADLINE_EXCEEDED, EARLY, UNAVAILABLE, Plan, RetryBudget
from micro.pool import CONNECT_TIMEOUT, READY, Peer, Pool, error, failure, unreachable
from micro.registry import (
    CachingRegistry,
    Node,
    Registry,
    RegistryError,
    Service,
    from_config,
)
from micro.registry.loop import LoopThread
from micro.selector import Route, StrategyFactory, matching_nodes, strategy
from micro.tls import TLS_KEY, Tls, plaintext_refused

Metadata: TypeAlias = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]
_Pairs: TypeAlias = tuple[tuple[str, str | bytes], ...]
T = TypeVar("T")

RELOOKUP = 1.0  # seconds between lookups of a service the cache lists no node of
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True)
class CallOptions:
    """How to route and retry a call; given per stub, per call, or both (per call
    wins field by field).

    ``version`` / ``metadata_filter``: only nodes at that version / with those labels.
    ``retries``: attempts after the first. ``strategy``: ``"least_request"``
    (default), ``"round_robin"``, ``"random"`` or a strategy factory.
    ``address``: call this ``host:port`` directly, bypassing discovery.
    ``attempt_timeout``: seconds one attempt may take (never more than what is left
    of the call's deadline), so a hung node costs that long, not the whole deadline:
    the attempt ends DEADLINE_EXCEEDED, counts against the node's health and, for an
    idempotent method, is retried on another node while the deadline allows. For a
    server stream it bounds the wait for the first reply, not the whole stream;
    client streams, never retried, are bounded by the deadline alone.
    ``compression``: how requests are compressed (``grpc.Compression.Gzip``), over
    the client's default.

        await greeter.say_hello(req, timeout=2, options=CallOptions(attempt_timeout=0.2))
    """

    version: str | None = None
    metadata_filter: Mapping[str, str] | None = field(default=None, compare=False)
    retries: int | None = None
    strategy: str | StrategyFactory[Any] | None = None
    address: str | None = None
    attempt_timeout: float | None = None
    compression: grpc.Compression | None = None
    _filter: tuple[tuple[str, str], ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"CallOptions.retries={self.retries}: must be >= 0")
        if self.attempt_timeout is not None and not self.attempt_timeout > 0:
            raise ValueError(
                f"CallOptions.attempt_timeout={self.attempt_timeout}: must be > 0 seconds"
            )
        if self.strategy is not None:
            strategy(self.strategy)  # fails now on an unknown name, not at call time
        if self.metadata_filter:
            object.__setattr__(self, "_filter", tuple(sorted(self.metadata_filter.items())))

    def over(self, base: CallOptions) -> CallOptions:
        """These options with ``base`` filling what they leave unset."""
        return CallOptions(
            version=self.version if self.version is not None else base.version,
            metadata_filter=(
                self.metadata_filter if self.metadata_filter is not None else base.metadata_filter
            ),
            retries=self.retries if self.retries is not None else base.retries,
            strategy=self.strategy if self.strategy is not None else base.strategy,
            address=self.address if self.address is not None else base.address,
            attempt_timeout=(
                self.attempt_timeout if self.attempt_timeout is not None else base.attempt_timeout
            ),
            compression=self.compression if self.compression is not None else base.compression,
        )


_DEFAULT = CallOptions()


class Client:
    """Finds nodes, balances, retries; stubs share one ``Client``.

    client = micro.Client(registry=registry)
    greeter = GreeterClient("greeter", client)

    ``retries`` and ``attempt_timeout`` apply to calls whose ``CallOptions`` leave
    them unset, ``timeout`` to calls made without one. Without ``registry`` the
    backend ``MICRO_REGISTRY`` names is opened on first discovery (calls with
    ``CallOptions(address=...)`` never open one). Async calls belong to one event
    loop; the blocking stubs may be used from any thread. ``middleware`` hooks every
    call and attempt, in the order given (``micro.Middleware``).

    Channels: ``compression`` of requests by default (``grpc.Compression.Gzip``),
    ``keepalive`` seconds between pings on a connection with calls open (a dead peer
    is noticed without waiting for a deadline), and ``options``, any grpc channel
    option (``("grpc.primary_user_agent", "shop/1.2")``).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        retries: int | None = None,
        timeout: float | None = None,
        attempt_timeout: float | None = None,
        strategy: str | StrategyFactory[Any] = "least_request",
        max_message_size: int = MAX_MESSAGE_SIZE,
        compression: grpc.Compression | None = None,
        keepalive: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
        middleware: Sequence[Middleware] = (),
        config: Config | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.config = config or Config.from_env()
        self.tls = tls if tls is not None else Tls.from_config(self.config)
        self.retries = self.config.client_retries if retries is None else retries
        self.timeout = self.config.client_request_timeout if timeout is None else timeout
        self.attempt_timeout = (
            self.config.client_attempt_timeout if attempt_timeout is None else attempt_timeout
        )
        self.strategy = strategy
        CallOptions(retries=self.retries, strategy=strategy, attempt_timeout=attempt_timeout)
        if self.config.auth_token is not None:  # this client's own token on every call
            middleware = (*middleware, _token(self.config.auth_token))
        self.chain = chain(middleware)
        if keepalive is not None:
            if not keepalive > 0:
                raise ValueError(f"Client keepalive={keepalive}: must be > 0 seconds")
            options = (("grpc.keepalive_time_ms", round(keepalive * 1000)), *options)
        self._pool = Pool(max_message_size, self.tls, options, compression)
        self._registry = registry
        self._owns_registry = registry is None
        self._cache: CachingRegistry | None = None
        self._generation = -1
        # (service, method path, options); a direct call's has no method path.
        self._routes: dict[tuple[str, str, CallOptions], Route[Peer]] = {}
        self._listed: dict[str, Service] = {}  # the routes' services' entries by address
        # Entries gone from the registry whose nodes still answer (a goodbye is not
        # proof: it may be forged or mistaken); dropped once a node stops answering.
        self._kept: dict[str, Service] = {}
        self._confirm = False  # whether removals need confirming (set with the cache)
        self._looked: dict[str, float] = {}  # when each service was last looked up
        self._checks: set[asyncio.Task[None]] = set()
        self._sync_checks: set[grpc.Future[Any]] = set()  # a blocking caller's (``_checked``)
        self._budgets: dict[str, RetryBudget] = {}
        self._background: LoopThread | None = None
        # Routing and retry bookkeeping; reentrant: a health check that ends at once
        # reports from inside the routing that started it.
        self._lock = threading.RLock()

    @property
    def registry(self) -> CachingRegistry:
        """The cached registry calls resolve through (opened on first use)."""
        if self._cache is None:
            backend = self._registry or from_config(self.config)
            self._cache = backend if isinstance(backend, CachingRegistry) else None
            self._cache = self._cache or CachingRegistry(backend)
            self._confirm = getattr(self._cache.backend, "removals_unverified", False)
        return self._cache

    # -- routing (no I/O) -------------------------------------------------------

    def _route(self, service: str, method: Method[Any, Any], options: CallOptions) -> Route[Peer]:
        """The route of a call; raises ``LookupError`` when the registry must be
        asked first (the drivers do that, async or blocking, and come back)."""
        if options.address is not None:
            return self._direct(service, options.address, options)
        cache = self.registry
        if cache.generation != self._generation:
            self._refresh(cache)
        key = (service, method.path, options)
        route = self._routes.get(key)
        if route is None:
            services = cache.cached(service)
            if services is None:
                raise LookupError(service)
            if self._kept:
                services = [*services, *(s for s in self._kept.values() if s.name == service)]
            nodes = matching_nodes(
                services,
                version=options.version,
                metadata=options.metadata_filter,
                endpoint=method.path[1:].replace("/", "."),
            )
            if not nodes:
                # The cache's view may be wrong (a missed announcement): ask again,
                # once per RELOOKUP, not on every call.
                if time.monotonic() - self._looked.get(service, -math.inf) >= RELOOKUP:
                    raise LookupError(service)
                raise errors.ServiceNotFound(_not_found(service, options, bool(services)))
            if self.tls is not None:
                nodes = _secured(service, nodes, self.tls)
            pick = strategy(options.strategy or self.strategy)()
            route = Route([self._node(n, service) for n in nodes], pick, cache.generation)
            self._routes[key] = route
            self._listed.update(_entries(cache, (service,)))  # so that their leaving is seen
        return route

    def _direct(self, service: str, address: str, options: CallOptions) -> Route[Peer]:
        """The route of a call to ``address``: kept until a registry node there
        leaves the registry (and never the reason to open one)."""
        cache = self._cache
        if cache is not None and cache.generation != self._generation:
            self._refresh(cache)
        key = (service, "", options)
        route = self._routes.get(key)
        if route is None:
            entry = _entries(cache, (service,)).get(address) if cache is not None else None
            labels = _labels(entry, address)
            # A peer broker's subscription entry names the service whose certificate
            # its node carries; any other call verifies the name of the service called.
            peer = self._pool.peer(address, labels.get(TLS_KEY, service), labels)
            route = self._routes[key] = Route((peer,), _first)
            if entry is not None:
                self._listed[address] = entry  # so that its leaving is noticed
        return route

    def _refresh(self, cache: CachingRegistry) -> None:
        """The registry changed: drop routes built on the old view, direct ones whose
        registry node just left it (a broker's subscriber, say), and the peers no
        route uses any more. Where anyone may remove a node (mDNS goodbyes), a node
        that left while this client is connected to it and hearing from it is kept
        until a health check or a call says it is gone."""
        self._generation = cache.generation
        old = self._routes
        listed = _entries(cache, {k[0] for k in old}.union(s.name for s in self._kept.values()))
        for address in [a for a in self._kept if a in listed]:
            self._unkeep(address)  # back in the registry
        if self._confirm:
            for address, entry in self._listed.items():
                if address not in listed and address not in self._kept:
                    self._keep_if_answering(address, entry)
        gone = self._listed.keys() - listed.keys() - self._kept.keys()
        self._listed = listed
        self._routes = {k: r for k, r in old.items() if not k[1] and k[2].address not in gone}
        live = listed.keys() | self._kept.keys()
        live.update(p.key for r in self._routes.values() for p in r.nodes)
        peers = self._pool.peers
        for address in [a for a in peers if a not in live]:
            self._pool.retire(peers.pop(address))

    def _keep_if_answering(self, address: str, entry: Service) -> None:
        """Keep ``entry`` if this client's channel to its node is up and its last
        call answered, and ask its health: an async caller's on its loop, a blocking
        caller's through its own channel (grpc's threads report the answer)."""
        peer = self._pool.peers.get(address)
        if peer is None or peer.failures:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a blocking caller's refresh
            loop = None
        if loop is not None:
            channel = peer.channel
            if channel is None or channel.get_state() is not READY:
                return
            self._keep(peer, entry)
            task = loop.create_task(self._check(peer, channel))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
            return
        sync_channel = peer.sync_channel
        if sync_channel is None or peer.state not in (None, READY):
            return
        self._keep(peer, entry)
        future = _health(sync_channel).future(_HEALTH_REQUEST, timeout=CONNECT_TIMEOUT)
        self._sync_checks.add(future)
        future.add_done_callback(lambda done: self._checked(peer, done))

    def _keep(self, peer: Peer, entry: Service) -> None:
        self._kept[peer.address] = entry
        peer.kept = self._forget

    async def _check(self, peer: Peer, channel: grpc.aio.Channel) -> None:
        """Forget a kept node unless its server says it is serving (a stopping one
        says NOT_SERVING before it leaves the registry)."""
        try:
            reply = await _health(channel)(_HEALTH_REQUEST, timeout=CONNECT_TIMEOUT)
            serving = reply.status == _SERVING
        except grpc.RpcError:
            serving = False
        if not serving:
            self._forget(peer.address)

    def _checked(self, peer: Peer, done: Any) -> None:
        """``_check`` of a blocking caller, from grpc's thread."""
        self._sync_checks.discard(done)
        serving = not done.cancelled() and done.exception() is None
        if not (serving and done.result().status == _SERVING):
            with self._lock:
                self._forget(peer.address)

    def _forget(self, address: str) -> None:
        """A kept node stopped answering: routes are rebuilt without it."""
        if self._unkeep(address):
            self._generation = -1

    def _unkeep(self, address: str) -> bool:
        peer = self._pool.peers.get(address)
        if peer is not None:
            peer.kept = None
        return self._kept.pop(address, None) is not None

    def _node(self, node: Node, service: str) -> Peer:
        """The peer at a registry node's address, which middleware sees as that node."""
        peer = self._pool.peer(node.address, service, node.metadata)
        peer.node = node
        return peer

    def _start(
        self,
        service: str,
        method: Method[Any, Any],
        options: CallOptions,
        timeout: float | None,
        metadata: Metadata | None,
        sync: bool,
    ) -> Call:
        """A call's pipeline; ``LookupError`` if the registry must be asked first."""
        with self._lock:
            route = self._route(service, method, options)
            plan = self._plan(service, method, options, timeout, route)
        return Call(self, service, method, plan, _outbound(metadata), sync, options.compression)

    def _plan(
        self,
        service: str,
        method: Method[Any, Any],
        options: CallOptions,
        timeout: float | None,
        route: Route[Peer],
    ) -> Plan[Peer]:
        deadline = self._deadline(method, timeout)
        if options.retries is not None:
            attempts = options.retries + 1
        else:
            attempts = method.max_attempts or self.retries + 1
        budget = self._budgets.get(service)
        if budget is None:
            budget = self._budgets[service] = RetryBudget()
        limit = options.attempt_timeout
        if limit is None:
            limit = self.attempt_timeout
        if method.client_streaming:  # one attempt, whatever its length: the deadline's
            limit = None
        return Plan(route, budget, method, deadline, attempts, attempt_timeout=limit)

    def _deadline(self, method: Method[Any, Any], timeout: float | None) -> float | None:
        """When a call must have ended (monotonic): after its timeout (else the
        method's, else the client's), or the inbound call's deadline if sooner."""
        now = time.monotonic()
        if timeout is None:
            timeout = method.timeout or self.timeout
        deadline = None if timeout is None else now + timeout
        ctx = inbound.get()
        if ctx is not None:
            remaining = ctx.time_remaining()
            if remaining is not None and (deadline is None or now + remaining < deadline):
                deadline = now + remaining
        return deadline

    async def _lookup(self, service: str, deadline: float | None) -> None:
        """Ask the registry for ``service`` before the call's ``deadline``."""
        self._looked[service] = time.monotonic()
        limit = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(self.registry.refresh(service), limit)
        except RegistryError as e:
            raise errors.Unavailable(f"cannot look up service {service!r}: {e}") from None
        except asyncio.TimeoutError:
            raise errors.DeadlineExceeded(
                f"deadline passed while looking up service {service!r}"
            ) from None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run registry work for blocking callers on the client's own loop thread."""
        if self._background is None:
            self._background = LoopThread("micro-client", repr(self), stop_at_exit=True)
        return self._background.run_sync(coro, timeout)

    # -- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        """Close every channel and stop following the registry."""
        checks, self._checks = list(self._checks), set()
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        self._stop_sync_checks()
        self._routes, self._kept = {}, {}
        await self._pool.close()
        await self._close_registry()
        self._stop_background()

    def close_sync(self) -> None:
        """``close`` for blocking users (no event loop of their own)."""
        self._stop_sync_checks()
        self._routes, self._kept = {}, {}
        self._pool.close_sync()
        if self._cache is not None:
            self._run(self._close_registry())
        self._stop_background()

    def _stop_sync_checks(self) -> None:
        for future in list(self._sync_checks):
            future.cancel()

    def _stop_background(self) -> None:
        if self._background is not None:
            self._background.stop()
            self._background = None

    async def _close_registry(self) -> None:
        cache, self._cache = self._cache, None
        if cache is None:
            return
        if self._owns_registry:
            await cache.close()
        else:
            await cache.unwatch()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()


def _first(nodes: Sequence[Peer]) -> Peer:
    return nodes[0]


def _entries(cache: CachingRegistry, services: Iterable[str]) -> dict[str, Service]:
    """The cache's entries for ``services`` by node address, one node each."""
    return {
        n.address: s.with_nodes((n,))
        for name in services
        for s in cache.cached(name) or ()
        for n in s.nodes
    }


def _secured(service: str, nodes: list[Node], tls: Tls) -> list[Node]:
    """The nodes this client calls: not the plaintext ones when it calls in TLS only."""
    secured = [n for n in nodes if not plaintext_refused(tls, n.metadata)]
    if not secured:
        raise errors.Unavailable(
            f"no node of service {service!r} serves TLS ({len(nodes)} plaintext): this "
            "client trusts MICRO_TLS_CA and never calls in plaintext"
        )
    return secured


def _labels(entry: Service | None, address: str) -> Mapping[str, str]:
    """The metadata of the registry node at ``address`` (none for an unlisted one)."""
    return {} if entry is None else entry.nodes[0].metadata


def _token(token: str) -> Middleware:
    """The middleware sending ``token`` (``MICRO_AUTH_TOKEN``) with every call; PyJWT,
    the auth extra, is imported only then."""
    from micro.middleware.auth import Auth

    return Auth(token=token)


def _not_found(service: str, options: CallOptions, known: bool) -> str:
    if not known:
        return f"service {service!r} not found in the registry"
    wanted = [f"version={options.version!r}"] if options.version is not None else []
    wanted += [f"{k}={v!r}" for k, v in options._filter]
    return f"no node of service {service!r} matches {', '.join(wanted) or 'this method'}"


def _outbound(metadata: Metadata | None) -> _Pairs | None:
    """The call's metadata plus what the inbound call passes on (explicit keys win)."""
    pairs: _Pairs | None
    if metadata is None:
        pairs = None
    elif isinstance(metadata, Mapping):
        pairs = tuple(metadata.items())
    else:
        pairs = tuple(metadata)
    if pairs:
        _check(pairs)
    ctx = inbound.get()
    if ctx is None or not ctx.propagated:
        return pairs
    if not pairs:
        return ctx.propagated
    own = {k for k, _ in pairs}
    return pairs + tuple(p for p in ctx.propagated if p[0] not in own)


_KEY = re.compile(r"[0-9a-z_.-]+")  # gRPC over HTTP/2: header names
_TEXT = re.compile(r"[ -~]*")  # values of keys not ending in -bin: printable ASCII


def _check(pairs: _Pairs) -> None:
    """Refuse what grpc would refuse with its internals (or pass on a bytes value a
    handler reads as text), naming the key."""
    for key, value in pairs:
        if not (isinstance(key, str) and _KEY.fullmatch(key)):
            raise errors.InvalidArgument(
                f"metadata key {key!r}: use lowercase letters, digits, '-', '_' and '.'"
            )
        if key.endswith("-bin"):
            if not isinstance(value, bytes):
                raise errors.InvalidArgument(f"metadata {key!r}: a -bin key carries bytes")
        elif not (isinstance(value, str) and _TEXT.fullmatch(value)):
            raise errors.InvalidArgument(
                f"metadata {key!r}: the value must be printable ASCII text"
                " (bytes go under a key ending in -bin)"
            )


def _health(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        _HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


_HEALTH_REQUEST = health_pb2.HealthCheckRequest()
_SERVING = health_pb2.HealthCheckResponse.SERVING


class Call:
    """One call through the pipeline: its plan, its middleware, and the bookkeeping
    of each attempt (counted in flight on its node, closing a node retired meanwhile,
    mapping a failure to a retry or to the error to raise). The drivers
    (``micro.stub``) do the I/O; each attempt is ``send``, then one of ``succeeded``,
    ``failed``, ``unreachable``, ``expired`` (which raise the call's error unless the
    plan retries) or ``abort`` (anything else ends the call: cancelled, say).
    """

    __slots__ = (
        "attempt_endings",
        "chain",
        "client",
        "compression",
        "endings",
        "info",
        "metadata",
        "method",
        "peer",
        "plan",
        "retry_of",
        "service",
        "sync",
    )

    def __init__(
        self,
        client: Client,
        service: str,
        method: Method[Any, Any],
        plan: Plan[Peer],
        metadata: _Pairs | None,
        sync: bool,
        compression: grpc.Compression | None = None,
    ) -> None:
        self.client = client
        self.compression = compression  # of this call's requests, if not the channel's
        self.service = service
        self.method = method
        self.plan = plan
        self.metadata = metadata
        self.sync = sync
        self.peer: Peer | None = None  # while an attempt is in flight
        self.chain = client.chain
        if self.chain is not None:
            self.retry_of: grpc.StatusCode | None = None
            self.attempt_endings: Endings = []
            self.info = ClientCall(
                service, method.path, method.kind, list(metadata or ()), plan.remaining
            )
            self.endings = begin(self.chain.call, self.info)

    @property
    def delay(self) -> float:
        """Seconds to wait before the next attempt."""
        return self.plan.delay

    def send(self) -> Any:
        """Begin the plan's attempt: the method's callable on its node."""
        peer = self.plan.node
        pool = self.client._pool
        if self.sync:  # blocking callers count from many threads; async ones from one
            send = pool.sync_call(peer, self.method)
            with peer.lock:
                peer.inflight += 1
        else:
            send = pool.call(peer, self.method)
            peer.inflight += 1
        self.peer = peer
        if self.chain is not None:
            self._begin_attempt(peer)
        return send

    def _begin_attempt(self, peer: Peer) -> None:
        assert self.chain is not None
        metadata = list(self.info.metadata)
        attempt = ClientAttempt(self.info, peer.node, self.plan.attempts, self.retry_of, metadata)
        self.attempt_endings = []
        self.attempt_endings = begin(self.chain.attempt, attempt)
        self.metadata = tuple(metadata)

    def succeeded(self) -> None:
        self.plan.succeeded()
        self._end_attempt(SUCCEEDED)
        if self.chain is not None:
            end(self.endings, SUCCEEDED)

    def failed(self, e: grpc.RpcError, received: bool = False) -> None:
        """The attempt failed with ``e`` (after ``received`` replies, for a stream):
        returns if the plan retries, else raises the call's error."""
        peer = self.sending
        draining = peer.draining_sync if self.sync else peer.draining
        code, ran = failure(e, peer, draining())
        with self.client._lock:
            retry = not (received or self.method.client_streaming) and self.plan.retry(code, ran)
        self._after(retry, code, lambda: error(e, peer, code, self.service, draining()))

    def unreachable(self) -> None:
        """No connection in time: returns if the plan retries, else raises:
        DEADLINE_EXCEEDED if the call's deadline ran out meanwhile, else UNAVAILABLE."""
        peer = self.sending
        with self.client._lock:
            retry = self.plan.retry(UNAVAILABLE, sent=False)
        self._after(retry, UNAVAILABLE, lambda: self._unconnected(peer))

    def _unconnected(self, peer: Peer) -> errors.Error:
        deadline = self.plan.deadline
        if deadline is not None and time.monotonic() >= deadline - EARLY:
            return errors.DeadlineExceeded(
                f"deadline passed while connecting to service {self.service!r} at"
                f" {peer.address} (the call was not sent)"
            )
        return unreachable(self.service, peer)

    def expired(self, received: bool) -> None:
        """A stream sent nothing within the attempt timeout: returns if the plan
        retries, else raises."""
        peer = self.sending
        with self.client._lock:
            retry = not received and self.plan.retry(DEADLINE_EXCEEDED)
        self._after(retry, DEADLINE_EXCEEDED, lambda: _no_reply(peer, self.plan))

    def abort(self, e: BaseException) -> None:
        """The call ends with ``e``, not a status of its node's (cancelled, the
        reader stopped, a hook refused it)."""
        if self.peer is not None:
            self._end_attempt(failed(e))
        if self.chain is not None:
            end(self.endings, failed(e))

    @property
    def sending(self) -> Peer:
        """The node of the attempt in flight."""
        peer = self.peer
        assert peer is not None, "no attempt in flight"
        return peer

    def _after(self, retry: bool, code: grpc.StatusCode, error: Callable[[], errors.Error]) -> None:
        """End a failed attempt: on to the next if ``retry``, else raise ``error()``."""
        if retry:
            if self.chain is None:
                self._end_attempt(None)
            else:
                self.retry_of = code
                self._end_attempt(Outcome(error(), code))
            return
        e = error()
        self._end_attempt(failed(e))
        if self.chain is not None:
            end(self.endings, failed(e))
        raise e from None

    def _end_attempt(self, outcome: Outcome | None) -> None:
        peer = self.sending
        self.peer = None
        if self.sync:
            with peer.lock:
                peer.inflight -= 1
        else:
            peer.inflight -= 1
        if peer.retired and not peer.inflight:
            self.client._pool.close_peer(peer)
        if self.chain is not None and outcome is not None and self.attempt_endings:
            end(self.attempt_endings, outcome)


def _no_reply(peer: Peer, plan: Plan[Peer]) -> errors.DeadlineExceeded:
    return errors.DeadlineExceeded(
        f"no reply from {peer.address} within the attempt timeout of {plan.attempt_timeout}s"
    )
