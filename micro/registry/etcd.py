"""A registry on etcd v3, through aetcd (``micro-grpc[etcd]``).

One key per node, ``<prefix><service>/<node id>``, holding the JSON of the service
with that one node (``micro.registry.entry``) and bound to a lease of the
registration TTL. Each ``register`` keeps the lease alive and writes the key only
when it differs or vanished, so a refresh costs no write and wakes no watcher. A node
that stops refreshing disappears when its lease runs out, which watchers see as a
delete. When etcd no longer knows a lease (it restarted with empty data, or a
partition outlived the TTL), the next ``register`` takes a new one and writes the key
again.

A watch reads the prefix, then follows etcd's watch from the revision after that
read; when the stream breaks it reads again and reports the difference, so it rides
out outages and compaction. If etcd lost its data meanwhile (its revision went back or
its cluster changed), nodes missing from the new read are not reported gone at once:
their services are about to register again, and a cache told "every node is gone"
would fail every call in between. Those still missing ``lost_data_grace`` seconds
later are reported gone.

aetcd's client speaks to one endpoint; several endpoints are tried in turn, the one that
answered last first. aetcd 1.0 opens only plain channels, so ``_Client`` opens the
channel itself: TLS for ``https://`` endpoints or given ``ca_file``, mutual TLS with
``cert_file`` and ``key_file``. Its channels are bound to the loop that made them, so
they live on a private loop thread (``micro.registry.loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

try:
    import aetcd  # type: ignore[import-untyped]
    import aetcd.client  # type: ignore[import-untyped]
    import aetcd.exceptions  # type: ignore[import-untyped]
    import aetcd.rpc  # type: ignore[import-untyped]
    import aetcd.transactions  # type: ignore[import-untyped]
    import aetcd.watcher  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("micro.registry.etcd needs aetcd: install `micro-grpc[etcd]`") from None

from micro.registry.base import RETRY_WATCH, Event, EventType, RegistryError, Service
from micro.registry.entry import decode_entry, encode
from micro.registry.feed import Feed
from micro.registry.loop import LoopRegistry, LoopThread, quietly

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHANNEL_OPTIONS = {
    # grpc backs off up to 120 s between reconnects by default; an etcd back from an
    # outage should be reached within a second.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Connections of our own: not one shared with (and backing off for) other channels
    # of the process to the same endpoint.
    "grpc.use_local_subchannel_pool": 1,
    # A peer gone silent under an idle watch stream is noticed (etcd allows >= 5 s).
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}

# This endpoint cannot answer now: try the next one.
_UNREACHABLE = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError, asyncio.TimeoutError)


@dataclass(frozen=True)
class _Held:
    """The lease a key of ours is bound to."""

    lease: int
    ttl: int


class EtcdRegistry(LoopRegistry["_Watch"]):
    """``Registry`` in etcd, shared by every process pointed at the same cluster and
    ``prefix``::

        registry = EtcdRegistry(["10.0.0.1:2379", "10.0.0.2:2379"], username="svc",
                                password=secret)
        svc = micro.Service("greeter", registry=registry)

    TLS is on for ``https://`` endpoints or when any of ``ca_file``, ``cert_file``,
    ``key_file`` (PEM files) is given, and then covers every endpoint::

        EtcdRegistry(["https://etcd-1:2379"], ca_file="ca.pem",
                     cert_file="client.pem", key_file="client-key.pem")

    ``ca_file`` is what the server's certificate must chain to (without it, grpc's
    default roots); ``cert_file`` and ``key_file`` go together, for etcd's
    ``--client-cert-auth``. The files are read and checked here, so a wrong path or a
    key that does not match its certificate fails now rather than at the first call.

    ``timeout`` bounds each request to etcd, in seconds. ``lost_data_grace`` is how
    long a watch keeps nodes that vanished with etcd's data (see above): a live service
    registers again within its TTL, so the default is the default ``register_ttl``.
    """

    def __init__(
        self,
        endpoints: Sequence[str] = ("127.0.0.1:2379",),
        *,
        prefix: str = "/micro/registry/",
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        timeout: float = 2.0,
        lost_data_grace: float = 30.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("EtcdRegistry needs at least one endpoint")
        if (username is None) != (password is None):
            raise ValueError("EtcdRegistry: give both username and password, or neither")
        if not prefix:
            raise ValueError("EtcdRegistry: prefix must not be empty")
        parsed = [(e, *_endpoint(e)) for e in endpoints]
        files = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
        tls = [e for e, scheme, _ in parsed if scheme == "https"]
        tls += [name for name, path in files.items() if path is not None]
        plain = [e for e, scheme, _ in parsed if scheme == "http"]
        if tls and plain:
            raise ValueError(
                f"EtcdRegistry: {', '.join(map(repr, plain))} is plain http, but TLS is on"
                f" ({', '.join(tls)}) and covers every endpoint"
            )
        self._credentials = _credentials(ca_file, cert_file, key_file) if tls else None
        self._addresses = [address for _, _, address in parsed]
        self.endpoints = [f"{host}:{port}" for host, port in self._addresses]
        self.prefix = prefix
        self._username = username
        self._password = password
        self._timeout = timeout
        self._grace = lost_data_grace
        super().__init__(LoopThread("micro-etcd", repr(self)), timeout)
        # Below: touched only on the private loop.
        self._clients: list[Any] = [None] * len(self.endpoints)
        self._current = 0
        self._connecting = asyncio.Lock()
        self._held: dict[bytes, _Held] = {}

    def __repr__(self) -> str:
        return f"EtcdRegistry({self.where}, prefix={self.prefix!r})"

    @property
    def where(self) -> str:
        return ",".join(self.endpoints)

    # -- on the private loop ------------------------------------------------------

    async def _client(self, i: int) -> Any:
        """Endpoint ``i``'s client, connected (and signed in, given credentials)."""
        async with self._connecting:
            client = self._clients[i]
            if client is None:
                host, port = self._addresses[i]
                client = _Client(
                    host,
                    port,
                    credentials=self._credentials,
                    username=self._username,
                    password=self._password,
                    timeout=self._timeout,
                    options=_CHANNEL_OPTIONS,
                )
                self._clients[i] = client
            try:
                await client.connect()
            except Exception:
                await self._reset(i)
                raise
            return client

    async def _reset(self, i: int) -> None:
        client, self._clients[i] = self._clients[i], None
        if client is not None:
            await quietly(client.close())

    async def _call(self, what: str, op: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        """``op(client, *args, **kw)`` on the endpoint that answered last, then on each
        other one while they are unreachable. Every failure is a ``RegistryError``
        naming the endpoints."""
        unreachable: list[str] = []
        count = len(self.endpoints)
        for step in range(count):
            i = (self._current + step) % count
            try:
                try:
                    result = await op(await self._client(i), *args, **kw)
                except aetcd.exceptions.UnauthenticatedError:
                    # etcd forgets sign-in tokens when it restarts: sign in again, once.
                    await self._reset(i)
                    result = await op(await self._client(i), *args, **kw)
            except _UNREACHABLE as e:
                unreachable.append(f"{self.endpoints[i]}: {_reason(e)}")
                continue
            except aetcd.ClientError as e:
                raise RegistryError(
                    f"etcd registry at {self.endpoints[i]}: {what} failed: {_reason(e)}"
                ) from None
            self._current = i
            return result
        raise RegistryError(
            f"etcd registry at {self.where} is unreachable ({what}): {'; '.join(unreachable)}"
        )

    def _prefix(self, service: str | None) -> bytes:
        return (self.prefix if service is None else f"{self.prefix}{service}/").encode()

    def _key(self, service: str, node: str) -> bytes:
        return f"{self.prefix}{service}/{node}".encode()

    def _decode(self, key: bytes, value: bytes) -> Service | None:
        return decode_entry(key.decode(errors="replace"), value, f"etcd registry at {self.where}")

    async def _register(self, service: Service, ttl: float) -> None:
        seconds = max(1, math.ceil(ttl))  # etcd leases count whole seconds
        for node in service.nodes:
            key = self._key(service.name, node.id)
            value = encode(service.with_nodes((node,)))
            self._held[key] = await self._keep(key, value, seconds, f"register {service.name!r}")

    async def _keep(self, key: bytes, value: bytes, ttl: int, what: str) -> _Held:
        """``key`` = ``value`` on a live lease of ``ttl`` seconds: the lease held
        already while etcd knows it (writing the key only if it differs or vanished),
        else a new one."""
        held = self._held.get(key)
        if held is not None and held.ttl == ttl:
            reply = await self._call(what, aetcd.Client.refresh_lease, held.lease)
            if reply is not None and reply.TTL > 0:
                await self._call(
                    what,
                    aetcd.Client.transaction,
                    compare=[aetcd.transactions.Value(key) == value],
                    success=[],
                    failure=[aetcd.transactions.Put(key, value, lease=held.lease)],
                )
                return held
            log.warning(
                "etcd registry at %s: the lease of %r is gone (etcd lost its data, or a"
                " partition outlived the TTL): registering again",
                self.where,
                key.decode(errors="replace"),
            )
        granted = await self._call(what, aetcd.Client.lease, ttl)
        await self._call(what, aetcd.Client.put, key, value, lease=granted.id)
        if held is not None:  # the TTL changed, or the lease is gone: let it go
            with contextlib.suppress(RegistryError):
                await self._call(what, aetcd.Client.revoke_lease, held.lease)
        return _Held(granted.id, ttl)

    async def _deregister(self, service: Service) -> None:
        what = f"deregister {service.name!r}"
        for node in service.nodes:
            key = self._key(service.name, node.id)
            held = self._held.pop(key, None)
            await self._call(what, aetcd.Client.delete, key)
            if held is not None:
                with contextlib.suppress(RegistryError):
                    await self._call(what, aetcd.Client.revoke_lease, held.lease)

    async def _read(self, prefix: bytes) -> tuple[Any, dict[bytes, Service]]:
        """The valid entries under ``prefix`` by key, and the header of that read."""
        found = await self._call("lookup", aetcd.Client.get_prefix, prefix)
        entries: dict[bytes, Service] = {}
        for kv in found.kvs:
            one = self._decode(kv.key, kv.value)
            if one is not None:
                entries[kv.key] = one
        return found.header, entries

    async def _entries(self, name: str | None) -> list[Service]:
        _, entries = await self._read(self._prefix(name))
        return [one for one in entries.values() if name is None or one.name == name]

    def _new_watch(self, service: str | None) -> _Watch:
        return _Watch(self, service)

    def _begin(self, watch: _Watch) -> asyncio.Future[None]:
        """The watch is set up once it has read what is there."""
        self._watches.add(watch)
        return watch.start()

    async def _disconnect(self) -> None:
        # Channels before the tasks: grpc cancels their calls and awaits them, so none
        # completes after the loop is closed.
        for i in range(len(self._clients)):
            await self._reset(i)


class _Watch:
    """One ``watch()``: a read, then etcd's watch from there, on the private loop."""

    def __init__(self, registry: EtcdRegistry, service: str | None) -> None:
        self.registry = registry
        self.service = service
        self.prefix = registry._prefix(service)
        self.feed = Feed(
            on_drop=functools.partial(registry._thread.call_soon, self.stop),
            failure=f"etcd registry at {registry.where}",
        )
        self.known: dict[bytes, Service] = {}
        self.missing: set[bytes] = set()  # known, absent since etcd lost its data
        self.revision = 0  # etcd's revision as last seen
        self.cluster = 0
        self.ready: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopped = False
        self.expiry: asyncio.TimerHandle | None = None

    def start(self) -> asyncio.Future[None]:
        """Starts following; the future is done once the first read is."""
        self.ready = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self.follow())
        return self.ready

    def stop(self) -> None:
        self.stopped = True
        self.registry._watches.discard(self)
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)
        if self.task is not None:
            self.task.cancel()
        if self.expiry is not None:
            self.expiry.cancel()
        self.feed.put(None)

    async def follow(self) -> None:
        try:
            await self.rounds()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a failure at the first read, or a bug: the caller sees it
            self.feed.put(e)
            self.stop()

    async def rounds(self) -> None:
        """Read, watch from there; when the watch breaks, read again (backing off)."""
        assert self.ready is not None
        registry = self.registry
        failures = 0
        lost: str | None = None
        while not self.stopped:
            try:
                header, entries = await registry._read(self.prefix)
                first = not self.ready.done()
                self.resync(header, entries, first=first)
                if first:
                    self.ready.set_result(None)
                if lost is not None:
                    log.warning("etcd registry at %s: watch resumed", registry.where)
                    lost = None
                failures = 0
                stream = await registry._call(
                    "watch",
                    aetcd.Client.watch_prefix,
                    self.prefix,
                    start_revision=header.revision + 1,
                )
                try:
                    # Python < 3.12's wait_for (which aetcd's watch creation uses) may
                    # swallow the cancellation that stop() sent meanwhile.
                    if self.stopped:
                        return
                    async for event in stream:
                        self.handle(event)
                finally:
                    await quietly(stream.cancel())
            except (RegistryError, aetcd.ClientError) as e:
                if not self.ready.done():
                    raise
                if lost is None:
                    lost = _reason(e)
                    log.warning(
                        "etcd registry at %s: watch lost, retrying: %s", registry.where, lost
                    )
            await asyncio.sleep(RETRY_WATCH[min(failures, len(RETRY_WATCH) - 1)])
            failures += 1

    def resync(self, header: Any, entries: dict[bytes, Service], *, first: bool) -> None:
        """Report how a fresh read differs from what was known (nothing, at first)."""
        lost_data = not first and (
            header.revision < self.revision or header.cluster_id != self.cluster
        )
        self.revision, self.cluster = header.revision, header.cluster_id
        if first:
            self.known = {k: one for k, one in entries.items() if self.wanted(one)}
            return
        for key in [k for k in self.known if k not in entries]:
            if lost_data or key in self.missing:
                self.missing.add(key)
            else:
                self.feed.put(Event(EventType.DELETE, self.known.pop(key)))
        for key, one in entries.items():
            self.update(key, one)
        if lost_data and self.missing:
            log.warning(
                "etcd registry at %s lost its data: keeping %d node(s) for %.1f s while their"
                " services register again",
                self.registry.where,
                len(self.missing),
                self.registry._grace,
            )
            if self.expiry is not None:
                self.expiry.cancel()
            loop = asyncio.get_running_loop()
            self.expiry = loop.call_later(self.registry._grace, self.expire)

    def expire(self) -> None:
        """The grace after a data loss is over: what is still missing is gone."""
        self.expiry = None
        for key in self.missing:
            gone = self.known.pop(key, None)
            if gone is not None:
                self.feed.put(Event(EventType.DELETE, gone))
        self.missing.clear()

    def handle(self, event: Any) -> None:
        key: bytes = event.kv.key
        self.revision = max(self.revision, event.kv.mod_revision)
        if event.kind == "DELETE":
            self.missing.discard(key)
            gone = self.known.pop(key, None)
            if gone is not None:
                self.feed.put(Event(EventType.DELETE, gone))
        else:
            self.update(key, self.registry._decode(key, event.kv.value))

    def update(self, key: bytes, one: Service | None) -> None:
        """``key`` now holds ``one`` (``None``: nothing valid)."""
        self.missing.discard(key)
        old = self.known.get(key)
        if one is None or not self.wanted(one):
            if old is not None:  # overwritten by something else: that node is gone
                del self.known[key]
                self.feed.put(Event(EventType.DELETE, old))
            return
        self.known[key] = one
        if old is None:
            self.feed.put(Event(EventType.CREATE, one))
        elif old != one:
            self.feed.put(Event(EventType.UPDATE, one))

    def wanted(self, one: Service) -> bool:
        return self.service is None or one.name == self.service


class _Client(aetcd.Client):  # type: ignore[misc]
    """``aetcd.Client`` on a channel of our own, plain or TLS: aetcd 1.0's ``connect``
    opens only plain ones. This one sets up what that one does (sign-in, stubs,
    watcher) but not its waiting for a concurrent connect: ``EtcdRegistry`` connects
    under a lock.

    It relies on aetcd internals, so pyproject pins ``aetcd>=1.0,<1.1``: the
    ``aetcd.client._handle_errors`` decorator (it turns grpc's errors into aetcd's,
    which ``_call`` catches), the constructor's ``_host``, ``_port``, ``_options``,
    ``_username``, ``_password`` and ``_timeout``, and what aetcd's methods use:
    the ``_connected`` event, ``channel``, ``metadata``, the ``*stub`` attributes
    and ``_watcher``. If a release renames one, importing this module fails (the
    decorator), ``connect`` raises ``AttributeError``, or aetcd's methods no longer
    find what is set here; the etcd tests fail in each case.
    """

    def __init__(
        self, host: str, port: int, *, credentials: grpc.ChannelCredentials | None, **kw: Any
    ) -> None:
        super().__init__(host, port, **kw)
        self._credentials = credentials

    @aetcd.client._handle_errors  # type: ignore[untyped-decorator]  # aetcd's errors, not grpc's
    async def connect(self) -> None:
        if self._connected.is_set():
            return
        rpc = aetcd.rpc
        target, options = f"{self._host}:{self._port}", tuple(self._options.items())
        if self._credentials is None:
            self.channel = rpc.insecure_channel(target, options=options)
        else:
            self.channel = rpc.secure_channel(target, self._credentials, options=options)
        if self._username is not None:
            self.auth_stub = rpc.AuthStub(self.channel)
            request = rpc.AuthenticateRequest(name=self._username, password=self._password)
            reply = await self.auth_stub.Authenticate(request, timeout=self._timeout)
            self.metadata = (("token", reply.token),)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


def _endpoint(text: str) -> tuple[str, tuple[str, int]]:
    """The scheme (``http``, ``https`` or ``""``) and host and port of
    ``[scheme://]host:port``."""
    scheme, sep, rest = text.rpartition("://")
    if scheme not in ("", "http", "https"):
        raise ValueError(f"etcd endpoint {text!r}: expected http:// or https://")
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"etcd endpoint {text!r} is not host:port")
    return scheme, (host, int(port))


def _credentials(
    ca_file: str | os.PathLike[str] | None,
    cert_file: str | os.PathLike[str] | None,
    key_file: str | os.PathLike[str] | None,
) -> grpc.ChannelCredentials:
    """grpc's TLS credentials from PEM files, which Python's ssl loads first: grpc
    would only find a bad file at the handshake, and say less."""
    if (cert_file is None) != (key_file is None):
        raise ValueError(
            "EtcdRegistry: give both cert_file and key_file (a client certificate), or neither"
        )
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file is not None:
        try:
            check.load_verify_locations(cafile=ca_file)
        except OSError as e:  # ssl.SSLError too
            raise ValueError(
                f"EtcdRegistry: ca_file {os.fspath(ca_file)!r}: {_reason(e)}"
            ) from None
    if cert_file is not None and key_file is not None:
        try:  # an empty password: an encrypted key fails here instead of prompting
            check.load_cert_chain(cert_file, key_file, password="")
        except OSError as e:
            raise ValueError(
                f"EtcdRegistry: cert_file {os.fspath(cert_file)!r}, key_file"
                f" {os.fspath(key_file)!r}: {_reason(e)}"
            ) from None
    return grpc.ssl_channel_credentials(_read(ca_file), _read(key_file), _read(cert_file))


def _read(path: str | os.PathLike[str] | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__
