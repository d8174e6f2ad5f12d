"""The client: the call pipeline, with thin async and sync drivers.

select → channel → invoke → classify → retry. ``Client`` resolves a service name
through the cached registry into a ``Route`` (filtered nodes and a strategy) and
keeps one channel per node address; a ``Plan`` (``micro.plan``) decides each
attempt. ``Stub`` and ``SyncStub`` only perform what the plan says, which keeps the
async and the blocking client to the same policy.

Generated ``<Svc>Client`` / ``<Svc>SyncClient`` classes subclass ``Stub`` /
``SyncStub``; each generated method is one call into ``_<kind>`` here.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import re
import threading
import time
import warnings
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from micro import errors
from micro.config import Config
from micro.context import inbound
from micro.method import Method, Resp
from micro.plan import DEADLINE_EXCEEDED, UNAVAILABLE, Plan, RetryBudget
from micro.registry import CachingRegistry, Registry, RegistryError, Service, from_config
from micro.selector import NodeHealth, Route, StrategyFactory, matching_nodes, strategy
from micro.server import MAX_MESSAGE_SIZE

Metadata: TypeAlias = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]
_Pairs: TypeAlias = tuple[tuple[str, str | bytes], ...]
T = TypeVar("T")

CONNECT_TIMEOUT = 2.0  # seconds a call waits for a connection before trying elsewhere
RELOOKUP = 1.0  # seconds between lookups of a service the cache lists no node of
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
READY = grpc.ChannelConnectivity.READY
_SETTLED = (READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
CANCELLED = grpc.StatusCode.CANCELLED
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # what read() returns at a stream's end


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

        await greeter.say_hello(req, timeout=2, options=CallOptions(attempt_timeout=0.2))
    """

    version: str | None = None
    metadata_filter: Mapping[str, str] | None = field(default=None, compare=False)
    retries: int | None = None
    strategy: str | StrategyFactory[Any] | None = None
    address: str | None = None
    attempt_timeout: float | None = None
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
        )


_DEFAULT = CallOptions()


class Peer(NodeHealth):
    """One node address: its health, its channels (async and sync, made on first use)
    and their method callables."""

    __slots__ = (
        "calls",
        "channel",
        "kept",
        "lock",
        "retired",
        "state",
        "sync_calls",
        "sync_channel",
    )

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.channel: grpc.aio.Channel | None = None
        self.calls: dict[Method[Any, Any], Any] = {}
        self.sync_channel: grpc.Channel | None = None
        self.sync_calls: dict[Method[Any, Any], Any] = {}
        self.lock = threading.Condition()  # sync bookkeeping and connectivity changes
        self.state: grpc.ChannelConnectivity | None = None  # sync channel, once followed
        self.retired = False
        # Set while the node is kept after leaving the registry: told of a failure.
        self.kept: Callable[[str], None] | None = None

    def failed(self, now: float) -> None:
        super().failed(now)
        if self.kept is not None:
            self.kept(self.address)

    def changed(self, state: grpc.ChannelConnectivity) -> None:
        """The sync channel's connectivity, from grpc's thread (``subscribe``)."""
        with self.lock:
            self.state = state
            self.lock.notify_all()

    def detach_sync(self) -> grpc.Channel | None:
        """Take the sync channel away (a later call opens another), no longer followed;
        ``_close_blocking`` closes it."""
        with self.lock:
            channel, self.sync_channel = self.sync_channel, None
            self.sync_calls = {}
            followed, self.state = self.state is not None, None
        if channel is not None and followed:
            channel.unsubscribe(self.changed)
        return channel


class Client:
    """Finds nodes, balances, retries; stubs share one ``Client``.

    client = micro.Client(registry=registry)
    greeter = GreeterClient("greeter", client)

    ``retries`` and ``attempt_timeout`` apply to calls whose ``CallOptions`` leave
    them unset, ``timeout`` to calls made without one. Without ``registry`` the
    backend ``MICRO_REGISTRY`` names is opened on first discovery (calls with
    ``CallOptions(address=...)`` never open one). Async calls belong to one event
    loop; the blocking stubs may be used from any thread.
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
        config: Config | None = None,
    ) -> None:
        self.config = config or Config.from_env()
        self.retries = self.config.client_retries if retries is None else retries
        self.timeout = self.config.client_request_timeout if timeout is None else timeout
        self.attempt_timeout = (
            self.config.client_attempt_timeout if attempt_timeout is None else attempt_timeout
        )
        self.strategy = strategy
        CallOptions(retries=self.retries, strategy=strategy, attempt_timeout=attempt_timeout)
        self._channel_options = (
            ("grpc.max_receive_message_length", max_message_size),
            ("grpc.max_send_message_length", max_message_size),
        )
        self._registry = registry
        self._owns_registry = registry is None
        self._cache: CachingRegistry | None = None
        self._generation = -1
        self._peers: dict[str, Peer] = {}
        # (service, method path, options); a direct call's has no method path.
        self._routes: dict[tuple[str, str, CallOptions], Route[Peer]] = {}
        self._listed: dict[str, Service] = {}  # the routes' services' entries by address
        # Entries gone from the registry whose nodes still answer (a goodbye is not
        # proof: it may be forged or mistaken); dropped once a node stops answering.
        self._kept: dict[str, Service] = {}
        self._confirm = False  # whether removals need confirming (set with the cache)
        self._looked: dict[str, float] = {}  # when each service was last looked up
        self._checks: set[asyncio.Task[None]] = set()
        self._budgets: dict[str, RetryBudget] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._orphans: list[grpc.aio.Channel] = []
        self._background: _LoopThread | None = None
        self._lock = threading.Lock()  # routing and retry bookkeeping of blocking callers

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
            pick = strategy(options.strategy or self.strategy)()
            route = Route([self._peer(n.address) for n in nodes], pick, cache.generation)
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
            route = self._routes[key] = Route((self._peer(address),), _first)
            entry = _entries(cache, (service,)).get(address) if cache is not None else None
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
        live.update(p.address for r in self._routes.values() for p in r.nodes)
        for address in [a for a in self._peers if a not in live]:
            self._retire(self._peers.pop(address))

    def _keep_if_answering(self, address: str, entry: Service) -> None:
        """Keep ``entry`` if its node has a connection up and its last call answered,
        and ask its health (async channels only: the check runs on their loop)."""
        peer = self._peers.get(address)
        channel = None if peer is None else peer.channel
        if peer is None or channel is None or peer.failures or channel.get_state() is not READY:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a blocking caller's refresh
            return
        self._kept[address] = entry
        peer.kept = self._forget
        task = loop.create_task(self._check(peer, channel))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self, peer: Peer, channel: grpc.aio.Channel) -> None:
        """Forget a kept node unless its server says it is serving (a stopping one
        says NOT_SERVING before it leaves the registry)."""
        check = channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply = await check(health_pb2.HealthCheckRequest(), timeout=CONNECT_TIMEOUT)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            serving = False
        if not serving:
            self._forget(peer.address)

    def _forget(self, address: str) -> None:
        """A kept node stopped answering: routes are rebuilt without it."""
        if self._unkeep(address):
            self._generation = -1

    def _unkeep(self, address: str) -> bool:
        peer = self._peers.get(address)
        if peer is not None:
            peer.kept = None
        return self._kept.pop(address, None) is not None

    def _peer(self, address: str) -> Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = Peer(address)
        return peer

    def _plan(
        self,
        service: str,
        method: Method[Any, Any],
        options: CallOptions,
        timeout: float | None,
        route: Route[Peer],
    ) -> Plan[Peer]:
        now = time.monotonic()
        if timeout is None:
            timeout = method.timeout or self.timeout
        deadline = None if timeout is None else now + timeout
        ctx = inbound.get()
        if ctx is not None:
            remaining = ctx.time_remaining()
            if remaining is not None and (deadline is None or now + remaining < deadline):
                deadline = now + remaining
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

    async def _lookup(self, service: str) -> None:
        self._looked[service] = time.monotonic()
        try:
            await self.registry.refresh(service)
        except RegistryError as e:
            raise errors.Unavailable(f"cannot look up service {service!r}: {e}") from None

    # -- channels ---------------------------------------------------------------

    def _call(self, peer: Peer, method: Method[Any, Any]) -> Any:
        call = peer.calls.get(method)
        if call is None:
            if peer.channel is None:
                peer.channel = grpc.aio.insecure_channel(
                    peer.address, options=self._channel_options
                )
            call = peer.calls[method] = getattr(peer.channel, method.kind)(
                method.path,
                request_serializer=method.serialize,
                response_deserializer=method.deserialize_response,
                _registered_method=True,
            )
        return call

    def _sync_call(self, peer: Peer, method: Method[Any, Any]) -> Any:
        call = peer.sync_calls.get(method)
        if call is None:
            with peer.lock:
                if peer.sync_channel is None:
                    peer.sync_channel = grpc.insecure_channel(
                        peer.address, options=self._channel_options
                    )
                call = peer.sync_calls[method] = getattr(peer.sync_channel, method.kind)(
                    method.path,
                    request_serializer=method.serialize,
                    response_deserializer=method.deserialize_response,
                    _registered_method=True,
                )
        return call

    def _retire(self, peer: Peer) -> None:
        """Close a peer's channels once its calls in flight are done."""
        peer.retired = True
        if peer.inflight == 0:
            self._close_peer(peer)

    def _close_peer(self, peer: Peer) -> None:
        channel, peer.channel = peer.channel, None
        peer.calls = {}
        sync_channel = peer.detach_sync()
        if sync_channel is not None:
            _close_blocking([sync_channel])
        if channel is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # retired by a blocking call: close() will do it
                self._orphans.append(channel)
                return
            task = loop.create_task(channel.close(grace=None))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run registry work for blocking callers on the client's own loop thread."""
        if self._background is None:
            self._background = _LoopThread()
        return self._background.run(coro, timeout)

    # -- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        """Close every channel and stop following the registry."""
        checks, self._checks = list(self._checks), set()
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        peers, self._peers = list(self._peers.values()), {}
        self._routes, self._kept = {}, {}
        channels = [p.channel for p in peers if p.channel is not None] + self._orphans
        self._orphans = []
        for peer in peers:
            peer.retired = True  # a call still running closes what it opens
            peer.channel = None
        for channel in channels:
            await channel.close(grace=None)
        self._close_sync(peers)
        loop = asyncio.get_running_loop()
        closing = [t for t in self._closing if t.get_loop() is loop]
        await asyncio.gather(*closing, return_exceptions=True)
        await self._close_registry()
        if self._background is not None:
            self._background.stop()
            self._background = None

    def close_sync(self) -> None:
        """``close`` for blocking users (no event loop of their own)."""
        peers, self._peers = list(self._peers.values()), {}
        self._routes, self._kept = {}, {}
        self._close_sync(peers)
        if self._cache is not None:
            self._run(self._close_registry())
        if self._background is not None:
            self._background.stop()
            self._background = None

    def _close_sync(self, peers: list[Peer]) -> None:
        for peer in peers:
            peer.retired = True
        _close_blocking([c for c in map(Peer.detach_sync, peers) if c is not None])

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


def _deprecated(method: Method[Any, Any], stacklevel: int) -> None:
    """Warn at the caller's line: the generated method calls a unary driver, while a
    streaming driver runs straight from the caller's loop."""
    warnings.warn(f"{method.path} is deprecated", DeprecationWarning, stacklevel=stacklevel)


def _unreachable(service: str, peer: Peer) -> errors.Unavailable:
    return errors.Unavailable(f"cannot connect to service {service!r} at {peer.address}")


def _failure(
    e: grpc.RpcError, peer: Peer, draining: Callable[[Peer], bool]
) -> tuple[grpc.StatusCode, bool]:
    """A failed attempt as the retry policy sees it: (status, whether it may have run).

    A call this client cancels raises CancelledError, not this error; grpc's server
    answers CANCELLED to calls it drops unrun, as its stop begins or when it is
    overloaded. From a node known to be ``draining`` (it said it is stopping, it left
    the registry, or its connection is closing) that is the node going away,
    UNAVAILABLE; otherwise the node is busy, not gone. (Closing a blocking client under
    a running call is the other source: that call may then retry, on a retired peer
    that closes after it.) A status marked as refused never ran (a stopping server,
    load shedding).
    """
    code: grpc.StatusCode = e.code()
    if code is CANCELLED:
        return (UNAVAILABLE if draining(peer) else code), True
    if code is RESOURCE_EXHAUSTED or code is UNAVAILABLE:
        trailers: Any = e.trailing_metadata() or ()  # pairs, sync or aio
        refused = next((v for k, v in trailers if k == errors.REFUSED_KEY), None)
        if refused == errors.STOPPING:
            peer.stopping = True
        return code, refused is None
    return code, True


def _draining(peer: Peer) -> bool:
    """Whether the node is known to be going away (async channel)."""
    channel = peer.channel
    return (
        peer.retired or peer.stopping or (channel is not None and channel.get_state() is not READY)
    )


def _draining_sync(peer: Peer) -> bool:
    """Whether the node is known to be going away (blocking channel, when watched)."""
    return peer.retired or peer.stopping or peer.state not in (None, READY)


def _error(
    e: grpc.RpcError, peer: Peer, code: grpc.StatusCode, service: str, gone: bool
) -> errors.Error:
    """The error a failed call raises. From a node whose connection is down (``gone``),
    an UNAVAILABLE is grpc's own (the node was not reached) and names the service;
    what a node answered is passed on as it is."""
    if e.code() is CANCELLED and code is UNAVAILABLE:
        return errors.Unavailable(f"{peer.address} dropped the call (CANCELLED): it is stopping")
    if e.code() is UNAVAILABLE and gone:
        return errors.Unavailable(
            f"cannot connect to service {service!r} at {peer.address}: {e.details()}"
        )
    return errors.from_rpc_error(e)


def _no_reply(peer: Peer, plan: Plan[Peer]) -> errors.DeadlineExceeded:
    return errors.DeadlineExceeded(
        f"no reply from {peer.address} within the attempt timeout of {plan.attempt_timeout}s"
    )


class _Watchdog:
    """Cancels a blocking stream that sends nothing before its attempt ``expires``
    (monotonic time): grpc's blocking iterator has no wait with a timeout."""

    __slots__ = ("fired", "timer")

    def __init__(self, cancel: Callable[[], object], expires: float) -> None:
        self.fired = False
        self.timer = threading.Timer(max(0.0, expires - time.monotonic()), self._fire, (cancel,))
        self.timer.daemon = True
        self.timer.start()

    def _fire(self, cancel: Callable[[], object]) -> None:
        self.fired = True
        cancel()

    def stop(self) -> None:
        self.timer.cancel()


async def _ready(channel: grpc.aio.Channel, timeout: float | None) -> bool:
    """Connect before sending, so a failure means the call never left (async)."""
    if channel.get_state(try_to_connect=True) is READY:
        return True
    limit = CONNECT_TIMEOUT if timeout is None else min(timeout, CONNECT_TIMEOUT)
    try:
        return await asyncio.wait_for(_settled(channel), limit)
    except asyncio.TimeoutError:
        return False


async def _settled(channel: grpc.aio.Channel) -> bool:
    state = channel.get_state(try_to_connect=True)
    while state not in _SETTLED:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)
    return state is READY


def _ready_sync(peer: Peer, channel: grpc.Channel, timeout: float | None) -> bool:
    """Connect before sending, so a failure means the call never left (blocking)."""
    limit = CONNECT_TIMEOUT if timeout is None else min(timeout, CONNECT_TIMEOUT)
    with peer.lock:
        if peer.state is None:
            peer.state = grpc.ChannelConnectivity.IDLE
            channel.subscribe(peer.changed, try_to_connect=True)
        peer.lock.wait_for(lambda: peer.state in _SETTLED, limit)
        return peer.state is READY


def _close_blocking(channels: Sequence[grpc.Channel]) -> None:
    """Close sync channels no longer followed (``Peer.detach_sync``). grpc follows a
    subscribed channel from a thread of its own that wakes every 0.2 s and raises
    there if it finds the channel closed before it has seen that nobody follows it
    any more (grpc issue 18995): each channel is closed once that thread has ended."""
    # Its wait is 0.2 s; the bound keeps a change in grpc from hanging the close.
    give_up = time.monotonic() + 2.0
    for channel in channels:
        follower = getattr(channel, "_connectivity_state", None)  # grpc's own, not API
        while follower is not None and follower.polling and time.monotonic() < give_up:
            time.sleep(0.005)
        channel.close()


class _LoopThread:
    """An event loop on a daemon thread, for registry work of blocking callers.

    A script that never closes its Client still gets a quiet exit: the loop is
    stopped at interpreter exit, its tasks (the registry watch) cancelled first, as
    otherwise they are destroyed pending and asyncio says so on stderr."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="micro-client", daemon=True
        )
        self.thread.start()
        atexit.register(self.stop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self.run(_cancel_tasks(), None)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def _cancel_tasks() -> None:
    """Cancel every other task of the running loop and wait for them to end."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Stub:
    """Base of generated async clients: ``GreeterClient("greeter", client)``."""

    __slots__ = ("_client", "_options", "_service")

    def __init__(self, service: str, client: Client, *, options: CallOptions | None = None):
        self._service = service
        self._client = client
        self._options = options or _DEFAULT

    def _start(
        self, method: Method[Any, Any], timeout: float | None, options: CallOptions | None
    ) -> Plan[Peer]:
        """The call's plan; ``LookupError`` if the registry must be asked first."""
        opts = self._options if options is None else options.over(self._options)
        route = self._client._route(self._service, method, opts)
        return self._client._plan(self._service, method, opts, timeout, route)

    async def _plan(
        self, method: Method[Any, Any], timeout: float | None, options: CallOptions | None
    ) -> Plan[Peer]:
        try:
            return self._start(method, timeout, options)
        except LookupError:
            await self._client._lookup(self._service)
            return self._start(method, timeout, options)

    async def _unary_unary(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Resp:
        """Unary and client-streaming calls: one answer, retried as the plan allows."""
        if method.deprecated:
            _deprecated(method, 4)
        plan = await self._plan(method, timeout, options)
        md = _outbound(metadata)
        connect_first = method.connect_first
        client = self._client
        while True:
            peer = plan.node
            peer.inflight += 1
            try:
                call = client._call(peer, method)
                if connect_first and not await _ready(peer.channel, plan.timeout):  # type: ignore[arg-type]
                    if not plan.retry(grpc.StatusCode.UNAVAILABLE, sent=False):
                        raise _unreachable(self._service, peer)
                else:
                    response: Resp = await call(request, timeout=plan.timeout, metadata=md)
                    plan.succeeded()
                    return response
            except grpc.RpcError as e:
                code, ran = _failure(e, peer, _draining)
                if method.client_streaming or not plan.retry(code, ran):
                    raise _error(e, peer, code, self._service, _draining(peer)) from None
            finally:
                peer.inflight -= 1
                if peer.retired and not peer.inflight:
                    client._close_peer(peer)
            if plan.delay:
                await asyncio.sleep(plan.delay)

    _stream_unary = _unary_unary

    async def _unary_stream(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> AsyncIterator[Resp]:
        """Server-streaming calls: one node for the whole stream; retried only
        before the first message arrived."""
        if method.deprecated:
            _deprecated(method, 3)
        plan = await self._plan(method, timeout, options)
        md = _outbound(metadata)
        connect_first = method.connect_first
        client = self._client
        while True:
            peer = plan.node
            peer.inflight += 1
            received = False
            call = None
            try:
                multicallable = client._call(peer, method)
                if connect_first and not await _ready(peer.channel, plan.timeout):  # type: ignore[arg-type]
                    if not plan.retry(grpc.StatusCode.UNAVAILABLE, sent=False):
                        raise _unreachable(self._service, peer)
                else:
                    call = multicallable(request, timeout=plan.remaining, metadata=md)
                    if plan.expires is None:
                        response = await call.read()
                    else:
                        response = await asyncio.wait_for(call.read(), plan.timeout)
                    while response is not _EOF:
                        received = True
                        yield response
                        response = await call.read()
                    plan.succeeded()
                    return
            except grpc.RpcError as e:
                code, ran = _failure(e, peer, _draining)
                if received or method.client_streaming or not plan.retry(code, ran):
                    raise _error(e, peer, code, self._service, _draining(peer)) from None
            except asyncio.TimeoutError:  # no first reply within the attempt timeout
                if received or not plan.retry(DEADLINE_EXCEEDED):
                    raise _no_reply(peer, plan) from None
            finally:
                if call is not None:
                    call.cancel()
                peer.inflight -= 1
                if peer.retired and not peer.inflight:
                    client._close_peer(peer)
            if plan.delay:
                await asyncio.sleep(plan.delay)

    _stream_stream = _unary_stream


class SyncStub:
    """Base of generated blocking clients: ``GreeterSyncClient("greeter", client)``."""

    __slots__ = ("_client", "_options", "_service")

    def __init__(self, service: str, client: Client, *, options: CallOptions | None = None):
        self._service = service
        self._client = client
        self._options = options or _DEFAULT

    def _start(
        self, method: Method[Any, Any], timeout: float | None, options: CallOptions | None
    ) -> Plan[Peer]:
        """The call's plan; ``LookupError`` if the registry must be asked first."""
        opts = self._options if options is None else options.over(self._options)
        client = self._client
        with client._lock:
            route = client._route(self._service, method, opts)
            return client._plan(self._service, method, opts, timeout, route)

    def _plan(
        self, method: Method[Any, Any], timeout: float | None, options: CallOptions | None
    ) -> Plan[Peer]:
        try:
            return self._start(method, timeout, options)
        except LookupError:
            self._client._run(self._client._lookup(self._service), timeout)
            return self._start(method, timeout, options)

    def _unary_unary(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Resp:
        if method.deprecated:
            _deprecated(method, 4)
        plan = self._plan(method, timeout, options)
        md = _outbound(metadata)
        connect_first = method.connect_first
        client = self._client
        while True:
            peer = plan.node
            with peer.lock:
                peer.inflight += 1
            try:
                call = client._sync_call(peer, method)
                if connect_first and not _ready_sync(peer, peer.sync_channel, plan.timeout):  # type: ignore[arg-type]
                    with client._lock:
                        if not plan.retry(grpc.StatusCode.UNAVAILABLE, sent=False):
                            raise _unreachable(self._service, peer)
                else:
                    if method.client_streaming:
                        request = iter(request)
                    response: Resp = call(request, timeout=plan.timeout, metadata=md)
                    plan.succeeded()
                    return response
            except grpc.RpcError as e:
                code, ran = _failure(e, peer, _draining_sync)
                with client._lock:
                    if method.client_streaming or not plan.retry(code, ran):
                        raise _error(e, peer, code, self._service, _draining_sync(peer)) from None
            finally:
                with peer.lock:
                    peer.inflight -= 1
                if peer.retired and not peer.inflight:
                    client._close_peer(peer)
            if plan.delay:
                time.sleep(plan.delay)

    _stream_unary = _unary_unary

    def _unary_stream(
        self,
        method: Method[Any, Resp],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Iterator[Resp]:
        if method.deprecated:
            _deprecated(method, 3)
        plan = self._plan(method, timeout, options)
        md = _outbound(metadata)
        connect_first = method.connect_first
        client = self._client
        while True:
            peer = plan.node
            with peer.lock:
                peer.inflight += 1
            received = False
            call = None
            watchdog = None
            try:
                multicallable = client._sync_call(peer, method)
                if connect_first and not _ready_sync(peer, peer.sync_channel, plan.timeout):  # type: ignore[arg-type]
                    with client._lock:
                        if not plan.retry(grpc.StatusCode.UNAVAILABLE, sent=False):
                            raise _unreachable(self._service, peer)
                else:
                    if method.client_streaming:
                        request = iter(request)
                    call = multicallable(request, timeout=plan.remaining, metadata=md)
                    if plan.expires is not None:
                        watchdog = _Watchdog(call.cancel, plan.expires)
                    for response in call:
                        if not received and watchdog is not None:
                            watchdog.stop()
                        received = True
                        yield response
                    plan.succeeded()
                    return
            except grpc.RpcError as e:
                expired = watchdog is not None and watchdog.fired
                code, ran = (
                    (DEADLINE_EXCEEDED, True) if expired else _failure(e, peer, _draining_sync)
                )
                with client._lock:
                    retry = not (received or method.client_streaming) and plan.retry(code, ran)
                if not retry:
                    raise (
                        _no_reply(peer, plan)
                        if expired
                        else _error(e, peer, code, self._service, _draining_sync(peer))
                    ) from None
            finally:
                if watchdog is not None:
                    watchdog.stop()
                if call is not None:
                    call.cancel()
                with peer.lock:
                    peer.inflight -= 1
                if peer.retired and not peer.inflight:
                    client._close_peer(peer)
            if plan.delay:
                time.sleep(plan.delay)

    _stream_stream = _unary_stream
