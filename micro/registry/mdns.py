"""Zero-setup discovery over multicast DNS (DNS-SD): the default registry.

Each node is one DNS-SD instance of type ``_micro._tcp.<domain>``. Its TXT record
carries the whole ``Service`` with that one node as JSON, in strings of at most 255
bytes (zlib-compressed when large). Records carry the registration ``ttl``, so a node
whose process dies leaves every peer's view when its TTL runs out: nobody answers the
refresh queries any more.

Why it is built this way:

- No probing. RFC 6762 probes a name for ~1.5 s before claiming it; instance names here
  are derived from (service name, node id) and node ids are unique, so a node is
  announced at once. Registering an unchanged node again only extends its lease (no
  packet); a changed node is announced again; a node not registered again within its
  ``ttl`` is withdrawn, as in every backend.
- Queries go out from a private port ("legacy unicast", RFC 6762 §6.7), so responders
  answer straight back instead of after multicast aggregation and rate limits (up to
  ~1.1 s). A cold lookup waits until answers stop arriving, ~0.1 s, 0.5 s at most.
  (A querier on port 5353 would also be answered at 127.0.0.1:5353, which the kernel
  hands to just one of the processes sharing that port.)
- The table is built from TXT records with its own expiry timer: zeroconf keeps PTR
  records for at least 1125 s and reaps its cache every 10 s, far longer than a TTL.
- Each registration carries an incarnation token and a sequence number, so stale copies
  still in flight (answers held back by rate limiting) cannot resurrect a node after
  its goodbye or roll back an update.
- zeroconf runs on its own thread and loop; the table has a lock and watches are fed
  across threads (``micro.registry.feed``), so one registry serves several event loops
  and threads (a sync client's loop thread beside a service's main loop).
- ``close`` leaves this instance's nodes to expire, like every backend: deregistering is
  the lifecycle's explicit step (``Service.stop`` does it first), and a closed responder
  answers no refresh query, so peers drop its nodes within their TTL.
- Nothing leaves the machine by default (``interfaces=("127.0.0.1",)``), and zeroconf's
  wildcard socket accepts only the groups it joined, so LAN mDNS traffic the host
  happens to receive is not picked up either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import random
import re
import secrets
import socket
import sys
import threading
import weakref
import zlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from zeroconf import Error as ZeroconfError
from zeroconf import (
    RecordUpdate,
    RecordUpdateListener,
    ServiceInfo,
    Zeroconf,
    current_time_millis,
)

# The wire types zeroconf re-exports without listing them in __all__.
from zeroconf._dns import DNSQuestion, DNSText
from zeroconf._protocol.incoming import DNSIncoming
from zeroconf._protocol.outgoing import DNSOutgoing

from micro.logs import Throttle
from micro.registry.base import Event, EventType, RegistryError, Service, group
from micro.registry.entry import MAX_SIZE, Malformed, document, from_document, parse
from micro.registry.entry import text as string_field
from micro.registry.feed import Feed, Feeds

log = logging.getLogger("micro.registry")

T = TypeVar("T")

MDNS_GROUP = ("224.0.0.251", 5353)
SETTLE_QUIET = 0.1  # s without a new node before a cold lookup answers
SETTLE_MAX = 0.5  # s a cold lookup waits at most
ABSENT_WAIT = 1.0  # s from browsing's start a cold lookup of a name not seen waits for it
REFRESH_AT = 0.75  # of a record's TTL: ask its owner again (RFC 6762 §5.2)
RETRY_EVERY = 0.1  # of the TTL between further tries until it expires
TOMBSTONE_SECONDS = 5.0  # copies of a withdrawn node still in flight are ignored
COMPRESS_ABOVE = 1000  # bytes of JSON
MAX_TXT = 7000  # bytes: the TXT record and the rest must fit one packet (8966)

_TYPE_PTR = 12
_TYPE_TXT = 16
_CLASS_IN = 1
_FORMAT = b"1"
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux only


@dataclass
class _Entry:
    """One node in the table; ``expires`` and ``next_query`` in zeroconf's ms clock."""

    service: Service  # carries exactly one node
    text: bytes
    incarnation: str
    seq: int
    expires: float
    ttl: float = 0.0  # s; 0 for our own nodes, which are never queried
    next_query: float = math.inf


@dataclass
class _Published:
    """A node this instance announces."""

    service: Service
    info: ServiceInfo
    incarnation: str
    seq: int
    ttl: int
    lease: float  # ms: withdrawn unless registered again by then
    announce: asyncio.Future[Any] | None = None


class MdnsRegistry:
    """``Registry`` over multicast DNS: nodes find each other with no server to run.

    ``interfaces`` are IPv4 addresses of the interfaces to announce and listen on;
    loopback only by default, so nothing leaves the machine::

        registry = MdnsRegistry()  # same host
        registry = MdnsRegistry(interfaces=["192.168.1.10"])  # the LAN, too

    The first call opens the sockets and starts browsing; from then on the table is
    kept current, so lookups are table reads.
    """

    # Anyone on the network may send a goodbye for any node: a client that is calling
    # a node the registry dropped asks the node before it believes it (``Client``).
    removals_unverified: ClassVar[bool] = True

    def __init__(
        self, *, interfaces: Sequence[str] = ("127.0.0.1",), domain: str = "local."
    ) -> None:
        if isinstance(interfaces, str):
            interfaces = (interfaces,)
        self.interfaces = tuple(_checked_interface(i) for i in interfaces)
        if not self.interfaces:
            raise RegistryError("mDNS needs at least one interface address")
        self.domain = domain if domain.endswith(".") else domain + "."
        self._type = f"_micro._tcp.{self.domain}"
        self._type_key = self._type.lower()
        # _lock guards the table (read from any thread); _start_lock
        # serialises opening and closing; everything else lives on zeroconf's loop.
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._closed = False
        self._zc: Zeroconf | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._entries: dict[str, _Entry] = {}
        self._watches = Feeds()
        self._settled = False
        self._published: dict[str, _Published] = {}
        self._tombstones: dict[str, tuple[str, float]] = {}
        self._transports: list[asyncio.DatagramTransport] = []
        self._listener = _Listener(self)
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._settled_future: asyncio.Future[None] | None = None
        self._began = 0.0
        self._last_new = 0.0
        self._warned: dict[str, bytes] = {}  # malformed entries: name → text last seen
        self._malformed = Throttle(log, "malformed mDNS entries")
        self._query_id = random.randint(1, 0xFFFF)

    def __repr__(self) -> str:
        return f"MdnsRegistry(interfaces={list(self.interfaces)!r}, domain={self.domain!r})"

    # -- the Registry protocol ------------------------------------------------------

    async def register(self, service: Service, ttl: float) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, not {ttl!r}")
        nodes = [
            (self._instance(service.name, n.id), service.with_nodes((n,))) for n in service.nodes
        ]
        await self._call(self._publish(nodes, ttl))

    async def deregister(self, service: Service) -> None:
        """Withdraw ``service.nodes`` that this instance registered (goodbye packets,
        so peers drop them at once); only their owner can withdraw nodes in mDNS."""
        if self._loop is None and not self._closed:
            return  # never started: nothing of ours is on the wire
        names = [self._instance(service.name, n.id) for n in service.nodes]
        await self._call(self._withdraw(names))

    async def get_service(self, name: str) -> list[Service]:
        """On a cold registry, a name not found when the answers settled is waited for
        until ``ABSENT_WAIT`` after browsing began: on a busy machine its owner may
        answer after the quiet period. On a warm one, the network is asked again
        (its answers come as watch events): an announcement may have been missed, or
        a goodbye forged."""
        await self._warm()
        found = self._named(name)
        left = (self._began + ABSENT_WAIT * 1000 - current_time_millis()) / 1000
        if found:
            return found
        if left <= 0:
            await self._call(self._ask())
            return found
        events = self.watch(name)
        try:
            if not (found := self._named(name)):  # it may have come before the watch
                with contextlib.suppress(asyncio.TimeoutError, StopAsyncIteration):
                    await asyncio.wait_for(anext(events), left)
                found = self._named(name)
        finally:
            await events.aclose()
        return found

    def _named(self, name: str) -> list[Service]:
        return [s for s in self._services() if s.name == name]

    async def list_services(self) -> list[Service]:
        await self._warm()
        return self._services()

    def watch(self, service: str | None = None) -> _Watch:
        """Changes from this call on (not from the first ``__anext__``), for one
        service or all; ends when the registry is closed. On a cold registry, the
        nodes found by the first query arrive as ``CREATE`` events."""
        feed = self._watches.add(service)  # ended at once once closed
        starting = None
        if self._loop is None and not self._closed:
            starting = feed.caller.create_task(self._started())  # browse from now on
            starting.add_done_callback(_retrieve)
        return _Watch(self, feed, starting)

    async def close(self) -> None:
        """Stop browsing and answering; goodbyes already under way finish. Nodes still
        registered are left to expire (as for every backend): nobody answers for them
        now, so peers drop them within their TTL."""
        await asyncio.to_thread(self._close)

    # -- bridging callers' loops to zeroconf's ----------------------------------------

    async def _started(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or self._closed:
            loop = await asyncio.to_thread(self._start)
        return loop

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on zeroconf's loop; a cancelled caller lets it finish there,
        so the table never holds half an operation."""
        try:
            loop = await self._started()
        except BaseException:
            coro.close()
            raise
        with self._lock:
            if self._closed:
                coro.close()
                raise RegistryError("mDNS registry is closed")
            future = asyncio.run_coroutine_threadsafe(self._guarded(coro), loop)
        return await asyncio.shield(asyncio.wrap_future(future))

    async def _guarded(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            return await coro
        except (ZeroconfError, OSError) as e:
            raise RegistryError(f"mDNS failed: {e!r}") from e
        finally:
            self._inflight.discard(task)

    async def _warm(self) -> None:
        await self._started()
        if not self._settled:
            await self._call(self._until_settled())
        if self._closed:
            raise RegistryError("mDNS registry is closed")

    # -- opening and closing (worker threads) ---------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._closed:
                raise RegistryError("mDNS registry is closed")
            if self._loop is not None:
                return self._loop
            sockets: list[socket.socket] = []
            try:
                for interface in self.interfaces:
                    sockets.append(_query_socket(interface))
                zc = _open_zeroconf(self.interfaces)
            except BaseException:
                for s in sockets:
                    s.close()
                raise
            assert zc.loop is not None
            try:
                asyncio.run_coroutine_threadsafe(self._setup(zc, sockets), zc.loop).result(5)
            except BaseException as e:
                for s in sockets:
                    s.close()
                zc.close()
                raise RegistryError(f"mDNS could not start: {e!r}") from None
            self._zc, self._loop = zc, zc.loop
            return zc.loop

    def _close(self) -> None:
        with self._start_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            self._watches.close()
            zc, loop = self._zc, self._loop
            if zc is None or loop is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._teardown(), loop).result(5)
            except Exception as e:
                log.warning("mDNS: closing did not finish cleanly: %r", e)
            finally:
                zc.close()

    # -- on zeroconf's loop -----------------------------------------------------------

    async def _setup(self, zc: Zeroconf, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for s in sockets:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Answers(zc), sock=s)
            self._transports.append(transport)
        self._zc = zc
        self._settled_future = loop.create_future()
        zc.async_add_listener(self._listener, None)
        self._began = self._last_new = current_time_millis()
        self._query([DNSQuestion(self._type, _TYPE_PTR, _CLASS_IN)])
        self._check_settled()

    async def _teardown(self) -> None:
        zc = self._zc
        assert zc is not None
        others = self._inflight - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=2)
        if self._timer is not None:
            self._timer.cancel()
        zc.async_remove_listener(self._listener)
        # Goodbyes already under way go out in full; the rest is left to expire.
        pending = [f for f in self._background if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=1)
        for pub in self._published.values():
            if pub.announce is not None:
                pub.announce.cancel()
        zc.registry.async_remove([pub.info for pub in self._published.values()])
        self._published.clear()
        for transport in self._transports:
            transport.close()
        if self._settled_future is not None and not self._settled_future.done():
            self._settled_future.set_result(None)
        self._settled = True
        await asyncio.sleep(0)  # let the transports finish closing

    async def _until_settled(self) -> None:
        assert self._settled_future is not None
        await asyncio.shield(self._settled_future)

    def _check_settled(self) -> None:
        now = current_time_millis()
        due = min(self._last_new + SETTLE_QUIET * 1000, self._began + SETTLE_MAX * 1000)
        if now < due:
            asyncio.get_running_loop().call_later((due - now) / 1000, self._check_settled)
            return
        self._settled = True
        if self._settled_future is not None and not self._settled_future.done():
            self._settled_future.set_result(None)

    async def _publish(self, nodes: list[tuple[str, Service]], ttl: float) -> None:
        zc = self._zc
        assert zc is not None
        now = current_time_millis()
        lease = now + ttl * 1000
        record_ttl = max(1, math.ceil(ttl))
        plans: list[tuple[str, Service, _Published | None, str, int, bytes]] = []
        for name, one in nodes:
            pub = self._published.get(name)
            if pub is not None and pub.service == one and pub.ttl == record_ttl:
                pub.lease = lease  # unchanged: no packet
                continue
            incarnation = pub.incarnation if pub else secrets.token_hex(4)
            seq = pub.seq + 1 if pub else 0
            plans.append((name, one, pub, incarnation, seq, _encode(one, incarnation, seq)))
        events: list[Event] = []
        for name, one, pub, incarnation, seq, text in plans:
            info = self._info(name, one, text, record_ttl)
            if pub is None:
                announce = await zc.async_register_service(info, cooperating_responders=True)
            else:
                if pub.announce is not None:
                    pub.announce.cancel()
                announce = await zc.async_update_service(info)
            self._published[name] = _Published(
                one, info, incarnation, seq, record_ttl, lease, asyncio.ensure_future(announce)
            )
            self._tombstones.pop(name, None)
            with self._lock:
                old = self._entries.get(name)
                self._entries[name] = _Entry(one, text, incarnation, seq, expires=math.inf)
            if old is None:
                events.append(Event(EventType.CREATE, one))
            elif old.service != one:
                events.append(Event(EventType.UPDATE, one))
        self._watches.notify(events)
        self._reschedule()

    async def _withdraw(self, names: list[str]) -> None:
        popped = [(n, self._published.pop(n, None)) for n in names]
        await self._goodbye([(n, p) for n, p in popped if p is not None])

    async def _goodbye(self, pubs: list[tuple[str, _Published]]) -> None:
        zc = self._zc
        assert zc is not None
        events: list[Event] = []
        for name, pub in pubs:
            if pub.announce is not None:
                pub.announce.cancel()
            goodbyes = asyncio.ensure_future(await zc.async_unregister_service(pub.info))
            self._background.add(goodbyes)
            goodbyes.add_done_callback(self._background.discard)
            self._tombstones[name] = (
                pub.incarnation,
                current_time_millis() + TOMBSTONE_SECONDS * 1000,
            )
            with self._lock:
                entry = self._entries.pop(name, None)
            if entry is not None:
                events.append(Event(EventType.DELETE, entry.service))
        if events:
            await asyncio.sleep(0)  # the first goodbye is on the wire before we return
        self._watches.notify(events)
        self._reschedule()

    def _on_records(self, now: float, records: list[RecordUpdate]) -> None:
        events: list[Event] = []
        for update in records:
            record = update.new
            if isinstance(record, DNSText) and record.key.endswith(self._type_key):
                events += self._apply(record.key, record, now)
        if events:
            self._watches.notify(events)
            self._reschedule()

    def _apply(self, name: str, record: DNSText, now: float) -> list[Event]:
        """Fold one TXT record into the table. There are four cases: our own node
        (we know better), a goodbye, a refresh of what we have, and news."""
        if name in self._published:
            return []
        with self._lock:
            entry = self._entries.get(name)
        if record.is_expired(now):
            # A goodbye (TTL 0), or zeroconf reaping its cache, which may be late.
            if entry is None or entry.text != record.text:
                return []
            if record.ttl != 0 and entry.expires > now:
                return []
            with self._lock:
                del self._entries[name]
            if record.ttl == 0:
                self._tombstones[name] = (entry.incarnation, now + TOMBSTONE_SECONDS * 1000)
            return [Event(EventType.DELETE, entry.service)]
        expires = record.get_expiration_time(100)
        next_query = record.get_expiration_time(int(REFRESH_AT * 100))
        if entry is not None and entry.text == record.text:
            with self._lock:
                entry.expires, entry.ttl, entry.next_query = expires, record.ttl, next_query
            return []
        try:
            service, incarnation, seq = _decode(record.text)
        except Malformed as e:
            self._warn(name, record.text, str(e))
            return []
        tomb = self._tombstones.get(name)
        if tomb is not None and tomb[0] == incarnation:
            return []  # a copy of a withdrawn node, still in flight
        if entry is not None and entry.incarnation == incarnation and entry.seq > seq:
            return []  # a copy from before the last update
        fresh = _Entry(service, record.text, incarnation, seq, expires, record.ttl, next_query)
        with self._lock:
            self._entries[name] = fresh
        if entry is None:
            self._last_new = now
            return [Event(EventType.CREATE, service)]
        if _key(entry.service) != _key(service):
            return [Event(EventType.DELETE, entry.service), Event(EventType.CREATE, service)]
        if entry.service != service:
            return [Event(EventType.UPDATE, service)]
        return []

    def _tick(self) -> None:
        """Expire nodes whose TTL ran out, ask owners of nodes about to expire, withdraw
        our nodes whose lease ran out."""
        self._timer = None
        now = current_time_millis()
        events: list[Event] = []
        due: list[str] = []
        with self._lock:
            for name, entry in list(self._entries.items()):
                if entry.expires <= now:
                    del self._entries[name]
                    events.append(Event(EventType.DELETE, entry.service))
            if any(e.next_query <= now for e in self._entries.values()):
                for name, entry in self._entries.items():
                    # Ask about every node that is nearly due too: one query, not many.
                    if entry.next_query <= now + 0.2 * entry.ttl * 1000:
                        due.append(name)
                        entry.next_query = now + max(RETRY_EVERY * entry.ttl * 1000, 100)
        if due:
            self._query([DNSQuestion(name, _TYPE_TXT, _CLASS_IN) for name in due])
        lapsed = [(n, pub) for n, pub in self._published.items() if pub.lease <= now]
        if lapsed:
            for name, _ in lapsed:
                del self._published[name]
            log.warning("mDNS: %d node(s) not registered again within their ttl", len(lapsed))
            task = asyncio.ensure_future(self._goodbye(lapsed))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for name, (_, until) in list(self._tombstones.items()):
            if until <= now:
                del self._tombstones[name]
        self._watches.notify(events)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:
            times = [min(e.expires, e.next_query) for e in self._entries.values()]
        times += [pub.lease for pub in self._published.values()]
        times += [until for _, until in self._tombstones.values()]
        times = [t for t in times if t != math.inf]
        if times:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(min(times) / 1000, self._tick)

    async def _ask(self) -> None:
        self._query([DNSQuestion(self._type, _TYPE_PTR, _CLASS_IN)])

    def _query(self, questions: list[DNSQuestion]) -> None:
        # A legacy unicast query carries an id (zeroconf writes it unless multicast);
        # a fresh one per query also keeps responders from dropping it as a duplicate
        # of an identical packet seen in the last 0.8 s (their own start-up query).
        self._query_id = self._query_id % 0xFFFF + 1
        out = DNSOutgoing(0, False, self._query_id)
        for question in questions:
            out.add_question(question)
        for packet in out.packets():
            for transport in self._transports:
                transport.sendto(packet, MDNS_GROUP)

    # -- helpers ------------------------------------------------------------------------

    def _instance(self, service: str, node_id: str) -> str:
        """A DNS-SD instance name, unique per (service, node id), readable in
        ``avahi-browse`` and within the 63-byte label limit."""
        digest = hashlib.sha256(f"{service}\0{node_id}".encode()).hexdigest()[:12]
        readable = re.sub(r"[^A-Za-z0-9-]+", "-", node_id).strip("-")[:40]
        label = f"{readable}-{digest}" if readable else digest
        return f"{label}.{self._type}".lower()

    def _info(self, name: str, one: Service, text: bytes, ttl: int) -> ServiceInfo:
        label = name[: -len(self._type) - 1]
        addresses, port = _split_address(one.nodes[0].address)
        return ServiceInfo(
            self._type,
            name,
            port=port,
            properties=text,
            server=f"{label}.{self.domain}",
            host_ttl=ttl,
            other_ttl=ttl,
            parsed_addresses=addresses,
        )

    def _services(self) -> list[Service]:
        now = current_time_millis()
        with self._lock:
            return group([e.service for e in self._entries.values() if e.expires > now])

    def _warn(self, name: str, text: bytes, reason: str) -> None:
        """Once per entry (a changed text of it at DEBUG; each is re-announced for as
        long as its sender likes), and throttled across entries."""
        seen = self._warned.get(name)
        if seen == text:
            return
        if len(self._warned) > 1000:
            self._warned.clear()
        self._warned[name] = text
        message = "mDNS: skipping malformed entry %s: %s"
        if seen is None:
            self._malformed.log(logging.WARNING, message, name, reason)
        else:
            log.debug(message, name, reason)


class _Watch:
    """What ``watch`` returns; unsubscribes when closed, exhausted or dropped."""

    def __init__(
        self,
        registry: MdnsRegistry,
        feed: Feed,
        starting: asyncio.Task[asyncio.AbstractEventLoop] | None,
    ) -> None:
        self._registry = registry
        self._feed = feed
        self._starting = starting  # held so the task is not collected mid-way
        self._done = False
        self._finalizer = weakref.finalize(self, registry._watches.remove, feed)

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        if not self._registry._closed:
            try:
                await self._registry._started()
            except RegistryError:
                await self.aclose()
                raise
        event = await self._feed.queue.get()
        if not isinstance(event, Event):  # None: the registry closed
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._done = True
        self._finalizer()


class _Listener(RecordUpdateListener):
    """zeroconf calls this on its loop for every record it receives."""

    def __init__(self, registry: MdnsRegistry) -> None:
        super().__init__()
        self._registry = weakref.ref(registry)

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        registry = self._registry()
        if registry is not None:
            registry._on_records(now, records)

    def async_update_records_complete(self) -> None:
        pass


class _Answers(asyncio.DatagramProtocol):
    """Answers to our queries, unicast to our private port: fed to zeroconf like any
    multicast response, so they reach the table through the one listener."""

    def __init__(self, zc: Zeroconf) -> None:
        self._zc = zc

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        msg = DNSIncoming(data, (str(addr[0]), addr[1]), None, current_time_millis())
        if msg.valid and msg.is_response():
            self._zc.record_manager.async_updates_from_response(msg)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background start's failure as seen: ``__anext__`` reports it."""
    if not task.cancelled():
        task.exception()


def _key(service: Service) -> tuple[str, str]:
    return service.name, service.nodes[0].id


def _checked_interface(interface: str) -> str:
    try:
        address = ipaddress.ip_address(interface)
    except ValueError:
        raise RegistryError(
            f"mDNS interface {interface!r} is not an IPv4 address "
            "(give the interface's address, e.g. 192.168.1.10)"
        ) from None
    if address.version != 4:
        raise RegistryError(f"mDNS interface {interface!r}: only IPv4 is supported")
    return str(address)


def _query_socket(interface: str) -> socket.socket:
    """A socket on a private port to send queries from: answers come back to it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        s.bind((interface, 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise RegistryError(f"mDNS cannot use interface {interface}: {e.strerror or e}") from None
    return s


def _open_zeroconf(interfaces: tuple[str, ...]) -> Zeroconf:
    """zeroconf on its own thread, on exactly these interfaces, or ``RegistryError``."""
    try:
        zc = Zeroconf(interfaces=list(interfaces))
    except OSError as e:
        raise RegistryError(
            f"mDNS cannot listen on {', '.join(interfaces)} (UDP 5353): {e.strerror or e}"
        ) from None
    bound = {t.sock_name[0] for t in zc.engine.senders}
    missing = [i for i in interfaces if i not in bound]
    if missing:
        zc.close()
        raise RegistryError(f"mDNS cannot join the multicast group on {', '.join(missing)}")
    if sys.platform.startswith("linux"):
        # Linux delivers a group's packets from every interface to every socket bound to
        # the port unless told otherwise; we want only the interfaces we joined on.
        for t in zc.engine.readers:
            if t.sock_name[0] in ("0.0.0.0", ""):
                t.sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
    return zc


def _split_address(address: str) -> tuple[list[str], int]:
    """``host:port`` → (IP literals for A/AAAA records, port) for the SRV record."""
    host, sep, port = address.rpartition(":")
    number = int(port) if sep and port.isdigit() and int(port) < 65536 else 0
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))], number
    except ValueError:
        return [], number


def _encode(one: Service, incarnation: str, seq: int) -> bytes:
    doc = {**document(one), "incarnation": incarnation, "seq": seq}
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    encoding = b"json"
    if len(data) > COMPRESS_ABOVE:
        data, encoding = zlib.compress(data, 9), b"zlib"
    strings = [b"micro=" + _FORMAT, b"enc=" + encoding]
    index = 0
    while data:
        key = b"d%d=" % index
        room = 255 - len(key)
        strings.append(key + data[:room])
        data = data[room:]
        index += 1
    text = b"".join(bytes([len(s)]) + s for s in strings)
    if len(text) > MAX_TXT:
        raise RegistryError(
            f"service {one.name!r} is too large to announce over mDNS "
            f"({len(text)} bytes of TXT, at most {MAX_TXT})"
        )
    return text


def _decode(text: bytes) -> tuple[Service, str, int]:
    """The TXT record back into (service with one node, incarnation, seq)."""
    pairs: dict[bytes, bytes] = {}
    i = 0
    while i < len(text):
        length = text[i]
        string = text[i + 1 : i + 1 + length]
        if len(string) != length:
            raise Malformed("truncated TXT record")
        key, _, value = string.partition(b"=")
        pairs.setdefault(key.lower(), value)
        i += 1 + length
    if pairs.get(b"micro") != _FORMAT:
        raise Malformed(f"not micro TXT format {_FORMAT.decode()}")
    chunks: list[bytes] = []
    while (chunk := pairs.get(b"d%d" % len(chunks))) is not None:
        chunks.append(chunk)
    data = b"".join(chunks)
    encoding = pairs.get(b"enc")
    if encoding == b"zlib":
        try:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, MAX_SIZE)
        except zlib.error as e:
            raise Malformed(f"bad zlib data: {e}") from None
        if inflater.unconsumed_tail:
            raise Malformed("payload too large")
    elif encoding != b"json":
        raise Malformed(f"unknown encoding {encoding!r}")
    doc = parse(data)
    service = from_document(doc)
    seq = doc.get("seq", 0)
    if not isinstance(seq, int):
        raise Malformed("'seq' is not an integer")
    return service, string_field(doc, "incarnation", ""), seq
