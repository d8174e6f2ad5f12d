"""Read-only discovery through DNS: Kubernetes headless services and Consul DNS.

``get_service("greeter")`` asks for the SRV records of ``_grpc._tcp.greeter.<domain>``
(each a target and a port; targets resolved from the additional section or by A/AAAA
queries) and, when there are none, for the A/AAAA records of ``greeter.<domain>`` with
the default gRPC ``port``. Every address is one node whose id is the address.

DNS cannot be told about nodes, so ``register`` raises: a service pointed at DNS fails
at start with a clear message instead of serving unseen. ``watch`` re-resolves every
name looked up so far each ``interval`` seconds and reports the differences.

The resolver is our own, on asyncio UDP (EDNS0 for answers up to 1232 bytes): three
record types need ~150 lines, where dnspython would be a dependency for every install.

    registry = DnsRegistry(domain="default.svc.cluster.local")  # Kubernetes, port "grpc"
    registry = DnsRegistry(domain="service.consul", srv_prefix="",
                           nameservers=["127.0.0.1:8600"])       # Consul
    client = micro.Client(registry=registry)
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from micro.registry.base import Event, EventType, Node, ReadOnly, RegistryError, Service

A, AAAA, SRV, OPT = 1, 28, 33, 41
NOERROR, NXDOMAIN = 0, 3
EDNS_PAYLOAD = 1232
MAX_POINTERS = 64  # compression pointers followed in one name: a loop ends here


@dataclass(frozen=True)
class _Record:
    name: str  # lower case, no trailing dot
    type: int
    data: bytes
    offset: int  # of ``data`` in the message, for names compressed inside it


class _Answer:
    """One parsed response: the rcode and the answer and additional records."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        (_, flags, qd, an, ns, ar) = struct.unpack_from("!HHHHHH", message)
        self.truncated = bool(flags & 0x0200)
        self.rcode = flags & 0x000F
        pos = 12
        for _ in range(qd):
            _, pos = self.name(pos)
            pos += 4
        self.records: list[_Record] = []
        self.answers = an
        for _ in range(an + ns + ar):
            name, pos = self.name(pos)
            rtype, _rclass, _ttl, length = struct.unpack_from("!HHIH", message, pos)
            pos += 10
            if pos + length > len(message):
                raise ValueError("record overruns the message")
            self.records.append(_Record(name, rtype, message[pos : pos + length], pos))
            pos += length
        self.additional = self.records[an + ns :]
        self.records = self.records[:an]

    def name(self, pos: int) -> tuple[str, int]:
        """The name at ``pos`` and where the bytes after it start."""
        labels: list[str] = []
        end = None
        for _ in range(MAX_POINTERS):
            length = self.message[pos]
            if length & 0xC0 == 0xC0:
                if end is None:
                    end = pos + 2
                pos = struct.unpack_from("!H", self.message, pos)[0] & 0x3FFF
                continue
            if length == 0:
                return ".".join(labels).lower(), pos + 1 if end is None else end
            labels.append(self.message[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
            pos += 1 + length
        raise ValueError("compression pointer loop")


def _query(name: str, rtype: int, ident: int) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1)  # RD; one OPT record
    qname = b"".join(
        bytes([len(label)]) + label for label in name.encode("idna").split(b".") if label
    )
    opt = b"\x00" + struct.pack("!HHIH", OPT, EDNS_PAYLOAD, 0, 0)
    return header + qname + b"\x00" + struct.pack("!HH", rtype, 1) + opt


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        ours = len(data) >= 12 and struct.unpack_from("!H", data)[0] == self.ident
        if ours and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


def _parse_server(server: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``v6``, ``[v6]:port``."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]:")
        return host.rstrip("]"), int(port or 53)
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 53


def system_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The ``nameserver`` lines of resolv.conf (a zone suffix ``%eth0`` dropped)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            host = fields[1].split("%")[0]
            found.append(f"[{host}]" if ":" in host else host)
    return found


def _address(ip: bytes, port: int) -> str:
    host = str(ipaddress.ip_address(ip))
    return f"[{host}]:{port}" if len(ip) == 16 else f"{host}:{port}"


class DnsRegistry:
    """``Registry`` answered by DNS; see the module docstring.

    ``nameservers`` are ``host`` or ``host:port`` (default: /etc/resolv.conf), tried
    in order; each query waits ``timeout`` seconds per server, ``attempts`` rounds.
    ``srv_prefix`` is put before ``<name>.<domain>`` for the SRV query ("" for
    Consul, whose plain service names answer SRV).
    """

    def __init__(
        self,
        *,
        domain: str = "svc.cluster.local",
        nameservers: Sequence[str] | None = None,
        port: int = 50051,
        interval: float = 5.0,
        timeout: float = 2.0,
        attempts: int = 2,
        srv_prefix: str = "_grpc._tcp.",
    ) -> None:
        if interval <= 0 or timeout <= 0 or attempts < 1:
            raise ValueError("interval and timeout must be positive, attempts at least 1")
        self.domain = domain.strip(".")
        self.nameservers = list(system_nameservers() if nameservers is None else nameservers)
        if not self.nameservers:
            raise ValueError("no nameservers given and none in /etc/resolv.conf")
        self._servers = [_parse_server(s) for s in self.nameservers]
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.attempts = attempts
        self.srv_prefix = srv_prefix
        self._known: dict[str, frozenset[str]] = {}  # name -> addresses
        self._closed = False

    async def register(self, service: Service, ttl: float) -> None:
        raise ReadOnly(
            f"DNS registry is read-only: {service.name!r} cannot register; publish it "
            "through DNS (a Kubernetes headless service, Consul) and use another "
            "registry to register"
        )

    async def deregister(self, service: Service) -> None:
        raise ReadOnly(f"DNS registry is read-only: {service.name!r} cannot deregister")

    async def get_service(self, name: str) -> list[Service]:
        addresses = await self._resolve(name)
        self._known[name] = addresses
        return [Service(name, nodes=_nodes(addresses))] if addresses else []

    async def list_services(self) -> list[Service]:
        """The names looked up so far: DNS cannot list a domain."""
        return [Service(name, nodes=_nodes(found)) for name, found in self._known.items()]

    def watch(self, service: str | None = None) -> AsyncIterator[Event]:
        """Re-resolves ``service`` (or every name looked up, as they are looked up)
        each ``interval`` seconds; raises ``RegistryError`` when resolution fails."""
        seen = {n: self._known[n] for n in self._known if service in (None, n)}
        return self._follow(service, seen)

    async def _follow(
        self, service: str | None, seen: dict[str, frozenset[str]]
    ) -> AsyncIterator[Event]:
        while not self._closed:
            await asyncio.sleep(self.interval)
            names = [service] if service is not None else list(self._known)
            resolved = await asyncio.gather(*(self._resolve(name) for name in names))
            if self._closed:
                return
            for name, now in zip(names, resolved, strict=True):
                # A name new to this watch starts from what its lookup returned, or
                # from now when it was never looked up (nothing to report yet).
                before = seen.get(name, self._known.get(name, now))
                seen[name] = self._known[name] = now
                for node in _nodes(before - now):
                    yield Event(EventType.DELETE, Service(name, nodes=(node,)))
                for node in _nodes(now - before):
                    yield Event(EventType.CREATE, Service(name, nodes=(node,)))

    async def close(self) -> None:
        self._closed = True

    async def _resolve(self, name: str) -> frozenset[str]:
        host = f"{name}.{self.domain}"
        answer = await self._ask(f"{self.srv_prefix}{host}", SRV)
        srv = [r for r in answer.records if r.type == SRV]
        if not srv:
            return frozenset(await self._addresses(host, self.port))
        found: set[str] = set()
        for record in srv:
            try:
                (port,) = struct.unpack_from("!H", record.data, 4)
                target, _ = answer.name(record.offset + 6)
            except (ValueError, IndexError, struct.error) as e:
                raise RegistryError(f"DNS lookup of {name}: malformed SRV record ({e})") from e
            if not target:  # "." says: no such service here (RFC 2782)
                continue
            glue = [
                r.data
                for r in answer.additional
                if r.name == target and (r.type, len(r.data)) in ((A, 4), (AAAA, 16))
            ]
            if glue:
                found.update(_address(ip, port) for ip in glue)
            else:
                found.update(await self._addresses(target, port))
        return frozenset(found)

    async def _addresses(self, host: str, port: int) -> list[str]:
        answers = await asyncio.gather(self._ask(host, A), self._ask(host, AAAA))
        return [
            _address(r.data, port)
            for answer in answers
            for r in answer.records
            if (r.type, len(r.data)) in ((A, 4), (AAAA, 16))
        ]

    async def _ask(self, name: str, rtype: int) -> _Answer:
        """The first answer from a nameserver (NOERROR or NXDOMAIN); ``RegistryError``
        naming every server and its failure when none gives one."""
        failures: dict[str, str] = {}
        for _ in range(self.attempts):
            for server, addr in zip(self.nameservers, self._servers, strict=True):
                ident = secrets.randbits(16)
                try:
                    answer = _Answer(await self._exchange(addr, _query(name, rtype, ident), ident))
                except TimeoutError:
                    failures[server] = f"no answer within {self.timeout}s"
                except (OSError, ValueError, IndexError, struct.error) as e:
                    failures[server] = f"{type(e).__name__}: {e}"
                else:
                    if answer.truncated:
                        failures[server] = "answer truncated (over the EDNS0 size)"
                    elif answer.rcode in (NOERROR, NXDOMAIN):
                        return answer
                    else:
                        failures[server] = f"rcode {answer.rcode}"
        detail = "; ".join(f"{s}: {why}" for s, why in failures.items())
        raise RegistryError(f"DNS lookup of {name} failed ({detail})")

    async def _exchange(self, addr: tuple[str, int], query: bytes, ident: int) -> bytes:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Exchange(ident), remote_addr=addr
        )
        try:
            transport.sendto(query)
            done, _ = await asyncio.wait({protocol.reply}, timeout=self.timeout)
            if not done:
                raise TimeoutError
            return protocol.reply.result()
        finally:
            transport.close()


def _nodes(addresses: frozenset[str]) -> tuple[Node, ...]:
    return tuple(Node(a, a) for a in sorted(addresses))


__all__ = ["DnsRegistry", "system_nameservers"]
