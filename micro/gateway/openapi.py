"""OpenAPI 3.1 from the services' descriptors: a path per route, a JSON Schema per
message (proto3 JSON: camelCase names, 64-bit integers as strings, enums by name),
``deprecated`` where the proto says so."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from micro.gateway.catalog import DEFAULT, Api, Binding, Operation

F = FieldDescriptor
_INT32 = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32, F.TYPE_UINT32, F.TYPE_FIXED32}
_INT64 = {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}
_VARIABLE = re.compile(r"\{([\w.]+)(?:=[^}]*)?\}")
STATUS = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC status of a failed call",
    "properties": {
        "code": {"type": "integer", "description": "google.rpc.Code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
    },
}


def document(apis: list[Api], title: str) -> dict[str, Any]:
    """The OpenAPI document of ``apis``."""
    schemas: dict[str, Any] = {"google.rpc.Status": STATUS}
    paths: dict[str, dict[str, Any]] = {}
    for api in apis:
        for op in api.operations:
            paths.setdefault(op.default_path, {})["post"] = _operation(op, DEFAULT, 0, schemas)
            for number, binding in enumerate(op.bindings, 1):
                path = _VARIABLE.sub(r"{\1}", binding.template.text)
                paths.setdefault(path, {})[binding.verb.lower()] = _operation(
                    op, binding, number, schemas
                )
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _operation(op: Operation, binding: Binding, number: int, schemas: dict[str, Any]) -> Any:
    desc = op.descriptor
    request, reply = desc.input_type, desc.output_type
    shown: dict[str, Any] = {
        "operationId": f"{op.service}.{desc.full_name}" + (f".{number}" if number else ""),
        "summary": f"{desc.containing_service.name}.{desc.name}",
        "tags": [op.service],
    }
    if desc.GetOptions().deprecated or desc.containing_service.GetOptions().deprecated:
        shown["deprecated"] = True
    bound = set(binding.template.fields)
    parameters = [
        {"name": f, "in": "path", "required": True, "schema": {"type": "string"}}
        for f in sorted(bound)
    ]
    if binding.body != "*":
        parameters += [
            {"name": f.name, "in": "query", "schema": _field(f, schemas)}
            for f in request.fields
            if f.name not in bound and f.name != binding.body and f.message_type is None
        ]
    if parameters:
        shown["parameters"] = parameters
    if binding.body:
        target = request if binding.body == "*" else request.fields_by_name[binding.body]
        schema = (
            _message(target, schemas) if isinstance(target, Descriptor) else _field(target, schemas)
        )
        shown["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    answer = (
        _field(reply.fields_by_name[binding.response_body], schemas)
        if binding.response_body
        else _message(reply, schemas)
    )
    if desc.server_streaming:
        content = {
            "application/x-ndjson": {"schema": answer},
            "text/event-stream": {"schema": answer},
        }
    else:
        content = _json(answer)
    shown["responses"] = {
        "200": {"description": "the reply", "content": content},
        "default": {
            "description": "the gRPC status, under its HTTP status",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}
            },
        },
    }
    if desc.client_streaming:
        shown["description"] = (
            "Client streaming: open a WebSocket on the POST path, send a JSON message per "
            "request and an empty one to end them."
        )
    return shown


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _message(desc: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    """A ``$ref`` to ``desc``'s schema, added to ``schemas`` with those it needs."""
    if desc.full_name in _WELL_KNOWN:
        return _WELL_KNOWN[desc.full_name]
    if desc.full_name.startswith("google.protobuf.") and desc.full_name.endswith("Value"):
        return _field(desc.fields_by_name["value"], schemas)  # wrappers: the value or null
    ref = {"$ref": f"#/components/schemas/{desc.full_name}"}
    if desc.full_name not in schemas:
        schemas[desc.full_name] = {}  # placeholder: a message may contain itself
        properties = {f.json_name: _field(f, schemas) for f in desc.fields}
        schemas[desc.full_name] = {"type": "object", "properties": properties}
        if desc.GetOptions().deprecated:
            schemas[desc.full_name]["deprecated"] = True
    return ref


def _field(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _field(value, schemas)}
    schema = _single(field, schemas)
    if field.is_repeated:
        schema = {"type": "array", "items": schema}
    if field.GetOptions().deprecated:
        schema = {**schema, "deprecated": True}
    return schema


def _single(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None:
        return _message(field.message_type, schemas)
    if field.enum_type is not None:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    kind = field.type
    if kind in _INT32:
        return {"type": "integer", "format": "int32"}
    if kind in _INT64:
        return {"type": "string", "format": "int64"}
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return {"type": "number"}
    if kind == F.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == F.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}
