"""The view model: what the templates render, with every name and import resolved.

Built from a CodeGeneratorRequest in three steps: an index of every message type by
full name, then one frozen ``File`` per generated file whose services and methods
carry final Python names and type expressions, so templates only loop.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2 as pb
from google.protobuf.compiler import plugin_pb2

from protoc_gen_micro import naming
from protoc_gen_micro.options import Options
from protoc_gen_micro.resources import micro_options

_OPTIONS = micro_options()

_SERVICE_FIELD = 6  # FileDescriptorProto.service
_METHOD_FIELD = 2  # ServiceDescriptorProto.method


@dataclass(frozen=True)
class Method:
    proto_name: str
    name: str
    path: str
    kind: str  # unary_unary | unary_stream | stream_unary | stream_stream
    request: str  # type expressions, e.g. _greeter_dot_v1_dot_greeter__pb2.HelloRequest
    response: str
    idempotency: str  # IDEMPOTENCY_UNKNOWN | NO_SIDE_EFFECTS | IDEMPOTENT
    retry_codes: tuple[str, ...]
    max_attempts: int
    timeout: float
    deprecated: bool
    doc: str
    sig: Signature

    @property
    def descriptor(self) -> str:
        """Runtime descriptor class for the kind: ``unary_stream`` -> ``UnaryStream``."""
        return self.kind.title().replace("_", "")


@dataclass(frozen=True)
class Signature:
    """Parameter and return types of a method's handler, async and sync client."""

    param: str
    handler_request: str
    client_request: str
    sync_request: str
    handler_returns: str
    client_returns: str
    sync_returns: str
    awaits: bool  # the async client's method is ``async def`` (unary response)
    # The handle-returning stubs (``<Svc>Calls``): request parameter (a request stream
    # may be left out and written instead) and handle class, async and blocking.
    calls_request: str
    sync_calls_request: str
    call: str
    sync_call: str


@dataclass(frozen=True)
class Service:
    proto_name: str
    full_name: str
    methods_class: str
    handler_class: str
    client_class: str
    sync_client_class: str
    calls_class: str
    sync_calls_class: str
    doc: str
    methods: tuple[Method, ...]


@dataclass(frozen=True)
class Import:
    module: str
    alias: str
    level: int = 0  # relative import: how many packages up (1: this one)

    @property
    def statement(self) -> str:
        package, _, name = self.module.rpartition(".")
        if self.level:
            return f"from {'.' * self.level}{package} import {name} as {self.alias}"
        if package:
            return f"from {package} import {name} as {self.alias}"
        return f"import {name} as {self.alias}"


@dataclass(frozen=True)
class File:
    source: str
    output: str
    imports: tuple[Import, ...]
    services: tuple[Service, ...]


def pb2_module(proto_path: str) -> str:
    """protoc's Python module for a .proto path: ``a/b-c.proto`` -> ``a.b_c_pb2``."""
    stem = proto_path.removesuffix(".proto")
    return stem.replace("-", "_").replace("/", ".") + "_pb2"


def build(request: plugin_pb2.CodeGeneratorRequest, options: Options | None = None) -> list[File]:
    """One File per requested .proto that declares services."""
    index = _TypeIndex(request.proto_file)
    by_name = {f.name: f for f in request.proto_file}
    # With a package, modules generated in this run are imported relatively.
    local = (
        {pb2_module(n) for n in request.file_to_generate} if options and options.package else set()
    )
    files = []
    for name in request.file_to_generate:
        proto = by_name[name]
        if proto.service:
            files.append(_build_file(proto, index, local))
    return files


class _TypeIndex:
    """Full proto type name -> (Python module, attribute path inside it)."""

    def __init__(self, files: Sequence[pb.FileDescriptorProto]) -> None:
        self._types: dict[str, tuple[str, str]] = {}
        for f in files:
            prefix = f".{f.package}" if f.package else ""
            for message in f.message_type:
                self._add(pb2_module(f.name), prefix, "", message)

    def _add(self, module: str, prefix: str, outer: str, msg: pb.DescriptorProto) -> None:
        attr = f"{outer}.{msg.name}" if outer else msg.name
        self._types[f"{prefix}.{msg.name}"] = (module, attr)
        for nested in msg.nested_type:
            self._add(module, f"{prefix}.{msg.name}", attr, nested)

    def __getitem__(self, full_name: str) -> tuple[str, str]:
        return self._types[full_name]


def _build_file(proto: pb.FileDescriptorProto, index: _TypeIndex, local: set[str]) -> File:
    comments = _comments(proto)
    modules = sorted(
        {
            index[t][0]
            for s in proto.service
            for m in s.method
            for t in (m.input_type, m.output_type)
        }
    )
    level = proto.name.count("/") + 1  # from this file's package up to the output root
    imports = tuple(
        Import(module, naming.module_alias(module), level if module in local else 0)
        for module in modules
    )
    aliases = {i.module: i.alias for i in imports}

    def type_expr(full_name: str, what: str) -> str:
        module, attr = index[full_name]
        naming.check_message(attr, f"{what}: message type {full_name.lstrip('.')}")
        return f"{aliases[module]}.{attr}"

    taken = {i.alias for i in imports}
    services = []
    for si, service in enumerate(proto.service):
        where = f"{proto.name}: service {service.name}"
        naming.check_identifier(service.name, where)
        names = [
            naming.allocate(service.name + suffix, taken) for suffix in naming.SERVICE_SUFFIXES
        ]
        full_name = f"{proto.package}.{service.name}" if proto.package else service.name
        method_names: set[str] = set()
        methods = []
        for mi, method in enumerate(service.method):
            what = f"{where}, method {method.name}"
            naming.check_identifier(method.name, what)
            deprecated = method.options.deprecated or service.options.deprecated
            doc = comments.get((_SERVICE_FIELD, si, _METHOD_FIELD, mi), "")
            methods.append(
                _build_method(
                    method,
                    name=naming.allocate(naming.snake_case(method.name), method_names),
                    path=f"/{full_name}/{method.name}",
                    request=type_expr(method.input_type, what),
                    response=type_expr(method.output_type, what),
                    doc=_with_deprecation(doc, deprecated),
                    deprecated=deprecated,
                )
            )
        services.append(
            Service(
                proto_name=service.name,
                full_name=full_name,
                methods_class=names[0],
                handler_class=names[1],
                client_class=names[2],
                sync_client_class=names[3],
                calls_class=names[4],
                sync_calls_class=names[5],
                doc=_with_deprecation(
                    comments.get((_SERVICE_FIELD, si), ""), service.options.deprecated
                ),
                methods=tuple(methods),
            )
        )
    output = proto.name.removesuffix(".proto").replace("-", "_") + "_micro.py"
    return File(proto.name, output, imports, tuple(services))


def _build_method(
    method: pb.MethodDescriptorProto,
    *,
    name: str,
    path: str,
    request: str,
    response: str,
    doc: str,
    deprecated: bool,
) -> Method:
    extra = method.options.Extensions[_OPTIONS.method]
    kind = ("stream" if method.client_streaming else "unary") + (
        "_stream" if method.server_streaming else "_unary"
    )
    level = pb.MethodOptions.IdempotencyLevel.Name(method.options.idempotency_level)
    return Method(
        proto_name=method.name,
        name=name,
        path=path,
        kind=kind,
        request=request,
        response=response,
        idempotency=level,
        retry_codes=tuple(extra.retry_codes),
        max_attempts=extra.max_attempts,
        timeout=extra.timeout,
        deprecated=deprecated,
        doc=doc,
        sig=_signature(method.client_streaming, method.server_streaming, request, response),
    )


def _signature(client_streaming: bool, server_streaming: bool, req: str, resp: str) -> Signature:
    """Types per streaming kind, decided here once so templates never branch on it.

    Handler methods are plain ``def`` typed for both kinds of override: an ``async
    def`` (a coroutine is an awaitable reply; an async generator an async iterator) or
    a ``def`` run in a worker thread (a reply; a generator). A request stream is
    ``micro.Requests``, read with ``async for`` or ``for``. A streamed response makes
    the async client method a plain ``def`` returning an async iterator.
    """
    kind = ("Stream" if client_streaming else "Unary") + ("Stream" if server_streaming else "Unary")
    if client_streaming:
        param, handler_req = "requests", f"_micro.Requests[{req}]"
        client_req, sync_req = (
            f"_abc.AsyncIterable[{req}] | _abc.Iterable[{req}]",
            f"_abc.Iterable[{req}]",
        )
        calls_req, sync_calls_req = f"{client_req} | None = None", f"{sync_req} | None = None"
        types = f"{req}, {resp}"
    else:
        param, handler_req, client_req, sync_req = "request", req, req, req
        calls_req, sync_calls_req, types = req, req, resp
    handles = {
        "calls_request": calls_req,
        "sync_calls_request": sync_calls_req,
        "call": f"_micro.{kind}Call[{types}]",
        "sync_call": f"_micro.Sync{kind}Call[{types}]",
    }
    if server_streaming:
        stream = f"_abc.AsyncIterator[{resp}]"
        handler = f"{stream} | _abc.Iterator[{resp}]"
        sync = f"_abc.Iterator[{resp}]"
        return Signature(
            param, handler_req, client_req, sync_req, handler, stream, sync, False, **handles
        )
    handler = f"{resp} | _abc.Awaitable[{resp}]"
    return Signature(param, handler_req, client_req, sync_req, handler, resp, resp, True, **handles)


def _comments(proto: pb.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    found = {}
    for location in proto.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text.strip():
            found[tuple(location.path)] = textwrap.dedent(text).strip()
    return found


def _with_deprecation(doc: str, deprecated: bool) -> str:
    if not deprecated:
        return doc
    return f"{doc}\n\nDeprecated: marked ``deprecated`` in the .proto file.".strip()
