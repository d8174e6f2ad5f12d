"""What the gateway can call: every registered service's methods, read from the
reflection of one of its nodes, and the HTTP routes they declare.

A service's descriptors are read once per version (reflection is a few round trips
on a blocking channel, so it runs in a thread) and kept in a pool of their own. Calls
go to nodes of the version the descriptors came from, as ``micro call`` does: other
versions may differ in their messages. When that version leaves the registry, the
next request reads a version that is there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pool import DescriptorPool

from micro import errors, reflection
from micro.client import Client
from micro.gateway.template import Template, TemplateError
from micro.method import Method
from micro.registry import Service
from micro.selector import matching_nodes
from micro.tls import Tls, blocking_channel, uses_tls

ROUTES_FRESH = 2.0  # seconds the table of annotated routes is trusted after a miss
VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Binding:
    """One HTTP route of a method: ``google.api.http`` or the default POST."""

    verb: str  # GET, POST, …
    template: Template
    body: str  # "*": the whole request; a field name; "": none (query parameters)
    response_body: str  # a field of the reply sent alone; "": the whole reply


DEFAULT = Binding("POST", Template.parse("/*/*/*"), "*", "")
"""``POST /<service>/<Service>/<Method>``, every method's route: the body is the request."""


@dataclass(frozen=True)
class Operation:
    """A method of a registered service, ready to call."""

    service: str  # the registry name
    version: str | None  # calls go to nodes of this version (None: the only one there is)
    method: Method[Any, Any]
    descriptor: MethodDescriptor
    bindings: tuple[Binding, ...]  # annotated routes (the default one is implied)
    pool: DescriptorPool

    @property
    def default_path(self) -> str:
        return f"/{self.service}/{self.descriptor.containing_service.name}/{self.descriptor.name}"


@dataclass(frozen=True)
class Api:
    """One registered service at one version: its operations by (Service, Method),
    under both the short and the full proto service name."""

    service: str
    version: str  # of the node the descriptors came from
    pinned: bool  # other versions were registered too: calls go to this one only
    operations: tuple[Operation, ...]

    def find(self, service: str, method: str) -> Operation | None:
        for op in self.operations:
            proto = op.descriptor.containing_service
            if method == op.descriptor.name and service in (proto.name, proto.full_name):
                return op
        return None


class Catalog:
    """Descriptors of the services ``client``'s registry lists, fetched as needed;
    ``token``: sent with reflection requests."""

    def __init__(self, client: Client, token: str | None = None) -> None:
        self.client = client
        # Reflection dials nodes as calls do, and with the gateway's own token, if
        # any, for services whose reflection needs one.
        self._tls = Tls.from_config(client.config)
        self._token = () if token is None else (("authorization", f"Bearer {token}"),)
        self._apis: dict[str, Api] = {}
        self._lock = asyncio.Lock()
        self._routes: list[tuple[Binding, Operation]] = []
        self._routes_at = -ROUTES_FRESH

    async def api(self, name: str) -> Api | None:
        """The service ``name`` as registered now; None if the registry has no node."""
        services = await self.client.registry.get_service(name)
        if not any(s.nodes for s in services):
            return None
        versions = {s.version for s in services}

        def current(api: Api | None) -> bool:
            return api is not None and api.version in versions and api.pinned == (len(versions) > 1)

        cached = self._apis.get(name)
        if cached is not None and current(cached):
            return cached
        async with self._lock:
            cached = self._apis.get(name)
            if cached is None or not current(cached):
                cached = self._apis[name] = await _read(name, services, self._tls, self._token)
        return cached

    async def apis(self) -> list[Api]:
        """Every registered service; one whose nodes do not answer is left out."""
        names = sorted({s.name for s in await self.client.registry.list_services()})
        found = []
        for name in names:
            try:
                api = await self.api(name)
            except (reflection.ReflectionError, errors.Error):
                continue
            if api is not None:
                found.append(api)
        return found

    async def routes(self, stale: bool) -> list[tuple[Binding, Operation]]:
        """The annotated routes of every service, most specific first. ``stale``: the
        caller found no route in the table it had, so read it again unless fresh."""
        if stale and time.monotonic() - self._routes_at >= ROUTES_FRESH:
            table = [
                (b, op) for api in await self.apis() for op in api.operations for b in op.bindings
            ]
            table.sort(key=lambda pair: -pair[0].template.literals)
            self._routes, self._routes_at = table, time.monotonic()
        return self._routes


async def _read(
    name: str, services: Sequence[Service], tls: Tls | None, metadata: Sequence[tuple[str, str]]
) -> Api:
    """The descriptors of ``name`` from one of its nodes, and that node's version."""
    candidates: dict[str, tuple[str, list[str], bool]] = {}
    for service in services:
        protos = sorted({e.name.rpartition(".")[0] for e in service.endpoints})
        for node in matching_nodes([service]):
            secure = uses_tls(tls, node.metadata)
            candidates.setdefault(node.address, (service.version, protos, secure))

    def ask(node: reflection.Reflection) -> tuple[str, list[str], DescriptorPool]:
        version, protos, _ = candidates[node.address]
        protos = protos or _served(node)
        return version, protos, node.copy(protos)

    def dial(address: str) -> grpc.Channel:
        return blocking_channel(address, name, tls, candidates[address][2])

    version, protos, pool = await asyncio.to_thread(
        reflection.first_answer,
        list(candidates),
        ask,
        reflection.REFLECTION_TIMEOUT,
        dial,
        metadata,
    )
    pinned = len({s.version for s in services}) > 1
    operations = []
    for proto in protos:
        desc: ServiceDescriptor = pool.FindServiceByName(proto)
        for m in desc.methods:
            bindings = _bindings(m)
            operations.append(
                Operation(
                    name, version if pinned else None, reflection.method(m), m, bindings, pool
                )
            )
    return Api(name, version, pinned, tuple(operations))


def _served(node: reflection.Reflection) -> list[str]:
    """What a node serves besides grpc's own services (health, reflection)."""
    return [s for s in node.services() if not s.startswith("grpc.")]


def _bindings(method: MethodDescriptor) -> tuple[Binding, ...]:
    options = descriptor_pb2.MethodOptions.FromString(method.GetOptions().SerializeToString())
    if not options.HasExtension(annotations_pb2.http):
        return ()
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    where = f"{method.full_name}'s google.api.http"
    return tuple(_binding(r, where) for r in (rule, *rule.additional_bindings))


def _binding(rule: http_pb2.HttpRule, where: str) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise reflection.ReflectionError(f"{where}: a rule without a path")
    if kind == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = kind.upper(), getattr(rule, kind)
    try:
        template = Template.parse(path)
    except TemplateError as e:
        raise reflection.ReflectionError(f"{where}: {e}") from None
    return Binding(verb, template, rule.body, rule.response_body)
