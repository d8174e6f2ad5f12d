"""Channels per node: connect, readiness, retire, close; and what a failed attempt
says about its node.

A ``Peer`` is one node address: its health (``NodeHealth``), its async and blocking
channels (made on first use) and their method callables. The ``Pool`` holds the
peers of one ``Client`` and is the one place channels are made and closed; a peer
that leaves the registry is retired and closed once its calls in flight are done.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from micro import errors
from micro.config import MAX_MESSAGE_SIZE
from micro.method import Method
from micro.plan import UNAVAILABLE
from micro.registry import Node
from micro.selector import Ejections, NodeHealth
from micro.tls import Tls, aio_channel, blocking_channel, uses_tls

CONNECT_TIMEOUT = 2.0  # seconds a call waits for a connection before trying elsewhere
READY = grpc.ChannelConnectivity.READY
_SETTLED = (READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
CANCELLED = grpc.StatusCode.CANCELLED
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


class Peer(NodeHealth):
    """One node address: its health, its channels (async and sync, made on first use)
    and their method callables. ``node`` is the registry's node there (one with no id
    for a direct address). ``name``: what its TLS certificate is verified to name
    (None: plaintext); ``key``: where the pool keeps it."""

    __slots__ = (
        "calls",
        "channel",
        "kept",
        "key",
        "lock",
        "name",
        "node",
        "retired",
        "security",
        "state",
        "sync_calls",
        "sync_channel",
    )

    def __init__(
        self,
        address: str,
        board: Ejections,
        name: str | None = None,
        key: str | None = None,
        security: str = "",
    ) -> None:
        super().__init__(address, board)
        self.name = name
        self.key = address if key is None else key
        self.security = security  # how it is dialled, for errors: what a handshake checks
        self.node = Node("", address)
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
        ``close_blocking`` closes it."""
        with self.lock:
            channel, self.sync_channel = self.sync_channel, None
            self.sync_calls = {}
            followed, self.state = self.state is not None, None
        if channel is not None and followed:
            channel.unsubscribe(self.changed)
        return channel

    def draining(self) -> bool:
        """Whether the node is known to be going away (async channel)."""
        channel = self.channel
        return (
            self.retired
            or self.stopping
            or (channel is not None and channel.get_state() is not READY)
        )

    def draining_sync(self) -> bool:
        """Whether the node is known to be going away (blocking channel, when watched)."""
        return self.retired or self.stopping or self.state not in (None, READY)


class Pool:
    """The peers of one client by address, and their channels: TLS where ``tls`` or
    the node's entry says (``micro.tls.uses_tls``), verifying the name called."""

    def __init__(
        self,
        max_message_size: int = MAX_MESSAGE_SIZE,
        tls: Tls | None = None,
        options: Sequence[tuple[str, Any]] = (),
        compression: grpc.Compression | None = None,
    ) -> None:
        self.tls = tls
        self.options = (
            ("grpc.max_receive_message_length", max_message_size),
            ("grpc.max_send_message_length", max_message_size),
            *options,
        )
        if compression is not None:  # what grpc's compression= argument sets
            self.options += (("grpc.default_compression_algorithm", int(compression)),)
        self.peers: dict[str, Peer] = {}
        self.ejections = Ejections()  # of these peers: their routes count again when it moves
        self.closing: set[asyncio.Task[None]] = set()
        # Async channels retired by a blocking call (no loop to close them on).
        self.orphans: list[grpc.aio.Channel] = []

    def peer(self, address: str, name: str, labels: Mapping[str, str]) -> Peer:
        """The peer at ``address`` for calls to ``name``, a node labelled ``labels``.
        An address is one server with one certificate: another name there (a forged
        or stale entry) gets a peer of its own, never the first one's channel."""
        verified = name if uses_tls(self.tls, labels) else None
        peer = self.peers.get(address)
        if peer is not None and peer.name == verified:
            return peer
        key = address if peer is None else f"{address} {verified}"
        found = self.peers.get(key)
        if found is None:
            found = self.peers[key] = Peer(
                address, self.ejections, verified, key, self._security(verified)
            )
        return found

    def _security(self, verified: str | None) -> str:
        """How a peer is dialled, as its errors say it: a failed handshake's own
        message may not (a server wanting a client certificate just closes)."""
        if verified is None:
            return ""
        trust = "the system's roots" if self.tls is None or self.tls.ca is None else self.tls.ca
        presented = (
            "no client certificate"
            if self.tls is None or not self.tls.serves
            else (f"client certificate {self.tls.cert}")
        )
        return f" (TLS: certificate naming {verified!r} signed by {trust}; {presented})"

    def call(self, peer: Peer, method: Method[Any, Any]) -> Any:
        """``method``'s async callable on ``peer``'s channel (opened on first use)."""
        call = peer.calls.get(method)
        if call is None:
            if peer.channel is None:
                peer.channel = aio_channel(
                    peer.address, peer.name or "", self.tls, peer.name is not None, self.options
                )
            call = peer.calls[method] = _callable(peer.channel, method)
        return call

    def sync_call(self, peer: Peer, method: Method[Any, Any]) -> Any:
        """``method``'s blocking callable on ``peer``'s sync channel."""
        call = peer.sync_calls.get(method)
        if call is None:
            with peer.lock:
                if peer.sync_channel is None:
                    peer.sync_channel = blocking_channel(
                        peer.address, peer.name or "", self.tls, peer.name is not None, self.options
                    )
                call = peer.sync_calls[method] = _callable(peer.sync_channel, method)
        return call

    def retire(self, peer: Peer) -> None:
        """Close a peer's channels once its calls in flight are done."""
        peer.retired = True
        if peer.inflight == 0:
            self.close_peer(peer)

    def close_peer(self, peer: Peer) -> None:
        channel, peer.channel = peer.channel, None
        peer.calls = {}
        sync_channel = peer.detach_sync()
        if sync_channel is not None:
            close_blocking([sync_channel])
        if channel is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # retired by a blocking call: close() will do it
                self.orphans.append(channel)
                return
            task = loop.create_task(channel.close(grace=None))
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)

    def take(self) -> list[Peer]:
        """Every peer, retired (a call still running closes what it opens), and the
        pool emptied."""
        peers, self.peers = list(self.peers.values()), {}
        for peer in peers:
            peer.retired = True
        return peers

    async def close(self) -> None:
        """Close every channel, async and blocking."""
        peers = self.take()
        channels = [p.channel for p in peers if p.channel is not None] + self.orphans
        self.orphans = []
        for peer in peers:
            peer.channel = None
        for channel in channels:
            await channel.close(grace=None)
        close_blocking([c for c in map(Peer.detach_sync, peers) if c is not None])
        loop = asyncio.get_running_loop()
        closing = [t for t in self.closing if t.get_loop() is loop]
        await asyncio.gather(*closing, return_exceptions=True)

    def close_sync(self) -> None:
        """``close`` of the blocking channels, for blocking users."""
        close_blocking([c for c in map(Peer.detach_sync, self.take()) if c is not None])


def _callable(channel: grpc.Channel | grpc.aio.Channel, method: Method[Any, Any]) -> Any:
    return getattr(channel, method.kind)(
        method.path,
        request_serializer=method.serialize,
        response_deserializer=method.deserialize_response,
        _registered_method=True,
    )


async def ready(peer: Peer, timeout: float | None) -> bool:
    """Connect before sending, so a failure means the call never left (async)."""
    channel: Any = peer.channel
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


def ready_sync(peer: Peer, timeout: float | None) -> bool:
    """Connect before sending, so a failure means the call never left (blocking)."""
    limit = CONNECT_TIMEOUT if timeout is None else min(timeout, CONNECT_TIMEOUT)
    channel: Any = peer.sync_channel
    with peer.lock:
        if peer.state is None:
            peer.state = grpc.ChannelConnectivity.IDLE
            channel.subscribe(peer.changed, try_to_connect=True)
        peer.lock.wait_for(lambda: peer.state in _SETTLED, limit)
        return peer.state is READY


def close_blocking(channels: Sequence[grpc.Channel]) -> None:
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


def failure(e: grpc.RpcError, peer: Peer, draining: bool) -> tuple[grpc.StatusCode, bool]:
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
        return (UNAVAILABLE if draining else code), True
    if code is RESOURCE_EXHAUSTED or code is UNAVAILABLE:
        trailers: Any = e.trailing_metadata() or ()  # pairs, sync or aio
        refused = next((v for k, v in trailers if k == errors.REFUSED_KEY), None)
        if refused == errors.STOPPING:
            peer.stopping = True
        return code, refused is None
    return code, True


def error(
    e: grpc.RpcError, peer: Peer, code: grpc.StatusCode, service: str, gone: bool
) -> errors.Error:
    """The error a failed call raises. From a node whose connection is down (``gone``),
    an UNAVAILABLE is grpc's own (the node was not reached) and names the service;
    what a node answered is passed on as it is."""
    if e.code() is CANCELLED and code is UNAVAILABLE:
        return errors.Unavailable(f"{peer.address} dropped the call (CANCELLED): it is stopping")
    if e.code() is UNAVAILABLE and gone:
        return errors.Unavailable(
            f"cannot connect to service {service!r} at {peer.address}{peer.security}: {e.details()}"
        )
    return errors.from_rpc_error(e)


def unreachable(service: str, peer: Peer) -> errors.Unavailable:
    return errors.Unavailable(
        f"cannot connect to service {service!r} at {peer.address}{peer.security}"
    )
