"""A registry on NATS JetStream key-value (nats-server 2.11+).

One key per node, ``<service>.<node id>`` (each part base64url-encoded, since KV keys
allow only ``[-/_=.a-zA-Z0-9]``), holding the JSON of the service with that one node.
Every ``register`` puts the key again with a per-message TTL (``Nats-TTL``) of the
registration TTL, so a crashed node's key disappears by itself; the bucket is created
with per-message TTLs allowed and subject delete markers, so an expiry reaches
watchers as a marker (a purge) like a ``deregister`` does.

nats-py connections belong to the event loop they were made on, so the connection
lives on a private loop thread (``micro.registry.loop``). Entries are encoded and
checked by ``micro.registry.entry``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import math
from collections.abc import Sequence

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client as _Nats
    from nats.js.kv import KeyValue
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("micro.registry.nats needs nats-py: install `micro-grpc[nats]`") from None

from micro.registry.base import Event, EventType, RegistryError, Service
from micro.registry.entry import decode_entry, encode
from micro.registry.feed import Feed
from micro.registry.loop import LoopRegistry, LoopThread, quietly
from micro.urls import masked_all

log = logging.getLogger(__name__)

_TTL_HEADER = "Nats-TTL"
_MARKER_TTL = 60.0  # seconds an expiry/purge marker stays visible in the stream
_STREAM_NOT_FOUND = 10059
_WHERE = "NATS registry"


class NatsRegistry(LoopRegistry["_Watch"]):
    """``Registry`` in a JetStream KV bucket, shared by every process that points at
    the same servers and bucket."""

    def __init__(
        self,
        servers: Sequence[str] = ("nats://127.0.0.1:4222",),
        *,
        bucket: str = "micro_registry",
        connect_timeout: float = 2.0,
        request_timeout: float = 2.0,
        reconnect_wait: float = 0.2,
    ) -> None:
        if isinstance(servers, str):
            servers = [servers]
        self.servers = list(servers)
        self.where = masked_all(self.servers)  # for messages: no passwords
        self.bucket = bucket
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._reconnect_wait = reconnect_wait
        super().__init__(LoopThread(f"micro-nats-{bucket}", repr(self)), request_timeout)
        # Below: touched only on the private loop.
        self._nc: _Nats | None = None
        self._kv: KeyValue | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._seen = False  # the bucket existed once for this registry

    def __repr__(self) -> str:
        return f"NatsRegistry({self.where}, bucket={self.bucket!r})"

    # -- on the private loop ------------------------------------------------------

    async def _connection(self) -> KeyValue:
        if self._kv is not None and self._nc is not None and not self._nc.is_closed:
            return self._kv
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        assert self._kv is not None
        return self._kv

    async def _connect(self) -> None:
        where = self.where

        async def on_error(e: Exception) -> None:
            log.debug("nats registry %s: %s", where, e)

        async def on_disconnect() -> None:
            # A watch cannot tell which updates it missed: fail it, the caller resyncs.
            for watch in list(self._watches):
                watch.fail(RegistryError(f"NATS registry at {where}: connection lost"))

        nc = _Nats()
        try:
            # The first connect tries each server twice, bounded; after that the
            # client reconnects forever (an outage ends when the server is back).
            await asyncio.wait_for(
                nc.connect(
                    servers=self.servers,
                    connect_timeout=self._connect_timeout,  # type: ignore[arg-type]
                    allow_reconnect=True,
                    max_reconnect_attempts=1,  # at start: fail fast
                    reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                ),
                self._connect_timeout * (len(self.servers) + 1),
            )
        except (OSError, asyncio.TimeoutError, nats.errors.Error) as e:
            with contextlib.suppress(Exception):
                await nc.close()
            raise RegistryError(f"NATS registry at {where} is unreachable: {e!r}") from None
        nc.options["max_reconnect_attempts"] = -1  # once up: ride out any outage
        self._nc = nc
        # A handle only: the bucket is created by the first register (or the first
        # watch of a registry that never saw it), not by merely connecting.
        self._kv = KeyValue(
            name=self.bucket,
            stream=f"KV_{self.bucket}",
            pre=f"$KV.{self.bucket}.",
            js=nc.jetstream(timeout=self._request_timeout),
            direct=False,
        )

    async def _create_bucket(self) -> KeyValue:
        """The bucket, with per-message TTLs allowed and delete markers for expiries
        (so watchers see a node expire); idempotent."""
        assert self._nc is not None
        js = self._nc.jetstream(timeout=self._request_timeout)
        try:
            return await js.create_key_value(
                bucket=self.bucket, history=1, limit_marker_ttl=_MARKER_TTL
            )
        except (nats.errors.Error, asyncio.TimeoutError) as e:
            raise self._error("bucket", e) from None

    def _error(self, what: str, e: BaseException) -> RegistryError:
        return RegistryError(f"NATS registry at {self.where}: {what} failed: {e!r}")

    async def _put(self, key: str, value: bytes, ttl: float) -> None:
        await self._connection()
        headers = {_TTL_HEADER: f"{max(1, math.ceil(ttl))}s"}
        assert self._nc is not None
        subject = f"$KV.{self.bucket}.{key}"
        try:
            await self._nc.jetstream(timeout=self._request_timeout).publish(
                subject, value, headers=headers
            )
        except (nats.js.errors.NotFoundError, nats.js.errors.NoStreamResponseError):
            # The server lost the bucket (restarted empty): create it and put again.
            self._kv = await self._create_bucket()
            await self._nc.jetstream(timeout=self._request_timeout).publish(
                subject, value, headers=headers
            )

    async def _register(self, service: Service, ttl: float) -> None:
        try:
            for node in service.nodes:
                one = service.with_nodes((node,))
                await self._put(_key(service.name, node.id), encode(one), ttl)
            self._seen = True
        except RegistryError:
            raise
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
            raise self._error(f"register {service.name!r}", e) from None

    async def _deregister(self, service: Service) -> None:
        kv = await self._connection()
        try:
            for node in service.nodes:
                await kv.purge(_key(service.name, node.id))
        except (nats.js.errors.NotFoundError, nats.js.errors.NoStreamResponseError):
            pass  # no bucket: nothing to remove
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
            raise self._error(f"deregister {service.name!r}", e) from None

    async def _entries(self, name: str | None) -> list[Service]:
        """Every node's record (optionally of one service), malformed ones skipped."""
        kv = await self._connection()
        subject = ">" if name is None else f"{_part(name)}.*"
        found: list[Service] = []
        try:
            watcher = await kv.watch(subject)
            try:
                left = await _held(watcher)  # deletions count, then drop
                while left:
                    entry = await watcher.updates(timeout=self._request_timeout)  # type: ignore[no-untyped-call]
                    if entry is None:
                        continue
                    left -= 1
                    if entry.operation is not None:  # a deletion or purge
                        continue
                    one = decode_entry(entry.key, entry.value, _WHERE)
                    if one is not None and (name is None or one.name == name):
                        found.append(one)
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        except (nats.js.errors.NotFoundError, nats.js.errors.NoStreamResponseError):
            if self._seen:  # lost, not empty: see _subscribe
                raise RegistryError(
                    f"NATS registry at {self.where}: bucket {self.bucket!r} is missing"
                ) from None
            return []
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
            raise self._error("lookup", e) from None
        self._seen = True
        return found

    async def _subscribe(self, watch: _Watch) -> None:
        kv = await self._connection()
        subject = ">" if watch.service is None else f"{_part(watch.service)}.*"
        try:
            watcher = await kv.watch(subject)
        except (nats.js.errors.NotFoundError, nats.js.errors.NoStreamResponseError):
            if self._seen:
                # The server lost the bucket (restarted empty). Not recreated here: an
                # empty bucket now would read as "every node gone" to a resyncing
                # cache, while the services are about to register again (recreating
                # it), so fail and let the caller retry.
                raise RegistryError(
                    f"NATS registry at {self.where}: bucket {self.bucket!r} is missing"
                ) from None
            self._kv = await self._create_bucket()
            try:
                watcher = await self._kv.watch(subject)
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
                raise self._error("watch", e) from None
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
            raise self._error("watch", e) from None
        try:
            # Registry calls made after watch() wait until this returns: what they
            # change comes after the values counted here, so it is reported.
            watch.initial = await _held(watcher)
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
            await quietly(watcher.stop())  # type: ignore[no-untyped-call]
            raise self._error("watch", e) from None
        self._seen = True
        if watch.done:  # dropped or closed while subscribing
            await quietly(watcher.stop())  # type: ignore[no-untyped-call]
            return
        watch.watcher = watcher
        self._watches.add(watch)
        watch.pump = asyncio.ensure_future(watch.follow())

    def _new_watch(self, service: str | None) -> _Watch:
        return _Watch(self, service)

    def _begin(self, watch: _Watch) -> asyncio.Future[None]:
        """The watch is set up once it has subscribed; failing that, it ends so."""

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                watch.fail(f.exception())

        setup = asyncio.ensure_future(self._subscribe(watch))
        setup.add_done_callback(done)
        return setup

    async def _disconnect(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._kv = None


class _Watch:
    """One ``watch()``: a KV watcher on the private loop feeding the caller's loop."""

    def __init__(self, registry: NatsRegistry, service: str | None) -> None:
        self.registry = registry
        self.service = service
        self.feed = Feed(
            on_drop=functools.partial(registry._thread.call_soon, self.stop),
            failure="NATS registry watch failed",
        )
        self.watcher: KeyValue.KeyWatcher | None = None
        self.pump: asyncio.Future[None] | None = None
        self.known: dict[str, Service] = {}
        self.initial = 0  # values still to come that were there before the watch
        self.done = False
        self.stopping: asyncio.Future[None] | None = None

    def fail(self, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        self.feed.put(error)
        self.registry._watches.discard(self)
        if self.watcher is not None:
            watcher = self.watcher
            self.stopping = asyncio.ensure_future(
                quietly(watcher.stop())  # type: ignore[no-untyped-call]
            )
        if self.pump is not None:
            self.pump.cancel()

    def stop(self) -> None:
        self.fail(None)

    async def follow(self) -> None:
        """Pump the KV watcher into the feed; whatever ends it ends the watch, told
        to its reader (who watches again), never silently."""
        assert self.watcher is not None
        try:
            async for entry in self.watcher:
                if entry is None:  # nats-py's end of the initial values: see _held
                    continue
                initial = self.initial > 0
                if initial:
                    self.initial -= 1
                self.handle(entry.key, entry.value, entry.operation, initial)
        except Exception as e:
            self.fail(e)
        self.fail(None)

    def handle(self, key: str, value: bytes | None, op: str | None, initial: bool) -> None:
        old = self.known.get(key)
        if op in ("DEL", "PURGE"):
            gone = self.known.pop(key, None)
            if gone is not None and not initial:
                self.feed.put(Event(EventType.DELETE, gone))
            return
        one = decode_entry(key, value or b"", _WHERE)
        if one is None or (self.service is not None and one.name != self.service):
            return
        self.known[key] = one
        if initial:
            return
        if old is None:
            self.feed.put(Event(EventType.CREATE, one))
        elif old != one:
            self.feed.put(Event(EventType.UPDATE, one))


async def _held(watcher: KeyValue.KeyWatcher) -> int:
    """How many values a new watch starts with (what was there before it, deletions
    included). nats-py marks their end with None, but may put it before values the
    server has sent and it has not yet read (its count is of values read), and a value
    put meanwhile may count as one of them; the server's own count is exact: all it
    has delivered so far and all it still holds."""
    assert watcher._sub is not None  # set by watch()
    info = await watcher._sub.consumer_info()
    return int(info.num_pending + info.delivered.consumer_seq)


def _part(text: str) -> str:
    """A KV-key-safe token for any string (base64url, no padding; never empty)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=") or "_"


def _key(service: str, node: str) -> str:
    return f"{_part(service)}.{_part(node)}"
