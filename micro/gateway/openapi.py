"""OpenAPI 3.1 from the services' descriptors: a path per route, a JSON Schema per
message (proto3 JSON: camelCase names, 64-bit integers as strings, enums by name),
``deprecated`` where the proto says so."""

from __future__ import annotations

import re
from collections.abc import Mapping
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


def document(apis: list[Api], title: str, notes: Mapping[str, str] | None = None) -> Any:
    """The OpenAPI document of ``apis``; ``notes``: .proto comments by full name
    (``micro.gateway.comments``), the descriptions."""
    return _Document(notes or {}).build(apis, title)


class _Document:
    def __init__(self, notes: Mapping[str, str]) -> None:
        self.notes = notes
        self.schemas: dict[str, Any] = {"google.rpc.Status": STATUS}

    def build(self, apis: list[Api], title: str) -> Any:
        paths: dict[str, dict[str, Any]] = {}
        for api in apis:
            for op in api.operations:
                paths.setdefault(op.default_path, {})["post"] = self.operation(op, DEFAULT, 0)
                for number, binding in enumerate(op.bindings, 1):
                    path = _VARIABLE.sub(r"{\1}", binding.template.text)
                    verb = binding.verb.lower()
                    paths.setdefault(path, {})[verb] = self.operation(op, binding, number)
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": "1"},
            "paths": paths,
            "components": {"schemas": self.schemas},
        }

    def operation(self, op: Operation, binding: Binding, number: int) -> Any:
        desc = op.descriptor
        request, reply = desc.input_type, desc.output_type
        shown: dict[str, Any] = {
            "operationId": f"{op.service}.{desc.full_name}" + (f".{number}" if number else ""),
            "summary": f"{desc.containing_service.name}.{desc.name}",
            "tags": [op.service],
        }
        about = [self.notes.get(desc.full_name, "")]
        if desc.client_streaming:
            about.append(
                "Client streaming: open a WebSocket on the POST path, send a JSON message "
                "per request and an empty one to end them."
            )
        if any(about):
            shown["description"] = "\n\n".join(a for a in about if a)
        if desc.GetOptions().deprecated or desc.containing_service.GetOptions().deprecated:
            shown["deprecated"] = True
        bound = set(binding.template.fields)
        parameters = [
            {"name": f, "in": "path", "required": True, "schema": {"type": "string"}}
            for f in sorted(bound)
        ]
        if binding.body != "*":
            parameters += [
                {"name": f.name, "in": "query", "schema": self.field(f)}
                for f in request.fields
                if f.name not in bound and f.name != binding.body and f.message_type is None
            ]
        if parameters:
            shown["parameters"] = parameters
        if binding.body:
            schema = (
                self.message(request)
                if binding.body == "*"
                else self.field(request.fields_by_name[binding.body])
            )
            shown["requestBody"] = {"required": True, "content": _json(schema)}
        answer = (
            self.field(reply.fields_by_name[binding.response_body])
            if binding.response_body
            else self.message(reply)
        )
        content = (
            {"application/x-ndjson": {"schema": answer}, "text/event-stream": {"schema": answer}}
            if desc.server_streaming
            else _json(answer)
        )
        shown["responses"] = {
            "200": {"description": "the reply", "content": content},
            "default": {
                "description": "the gRPC status, under its HTTP status",
                "content": _json({"$ref": "#/components/schemas/google.rpc.Status"}),
            },
        }
        return shown

    def message(self, desc: Descriptor) -> dict[str, Any]:
        """A ``$ref`` to ``desc``'s schema, added to the components with those it needs."""
        if desc.full_name in _WELL_KNOWN:
            return _WELL_KNOWN[desc.full_name]
        if desc.full_name.startswith("google.protobuf.") and desc.full_name.endswith("Value"):
            return self.field(desc.fields_by_name["value"])  # wrappers: the value or null
        if desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = {}  # placeholder: a message may contain itself
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {f.json_name: self.field(f) for f in desc.fields},
            }
            if desc.full_name in self.notes:
                schema["description"] = self.notes[desc.full_name]
            if desc.GetOptions().deprecated:
                schema["deprecated"] = True
            self.schemas[desc.full_name] = schema
        return {"$ref": f"#/components/schemas/{desc.full_name}"}

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        schema: dict[str, Any]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema = {"type": "object", "additionalProperties": self.field(value)}
        elif field.message_type is not None:
            schema = self.message(field.message_type)
        else:
            schema = _single(field)
        if field.is_repeated and "additionalProperties" not in schema:
            schema = {"type": "array", "items": schema}
        if field.full_name in self.notes:
            schema = {**schema, "description": self.notes[field.full_name]}
        if field.GetOptions().deprecated:
            schema = {**schema, "deprecated": True}
        return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _single(field: FieldDescriptor) -> dict[str, Any]:
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
