"""HTTP requests to protobuf messages and replies back, by the HTTP/gRPC transcoding
rules: path variables and query parameters set fields by their path (``book.id``),
``body`` says which field the JSON body fills ("*": the whole request, less what the
path binds), and ``response_body`` which field of the reply is sent.

Bad input is ``BadRequest`` naming the field (or the parameter) and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message


class BadRequest(Exception):
    """Input that does not fit the method's request: answered 400, INVALID_ARGUMENT."""


def loads(text: bytes | str, where: str) -> Any:
    """JSON, or ``BadRequest`` saying where and what is wrong."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON in {where}: {e}") from None


def message(
    kind: type[Message], data: Any, where: str, pool: DescriptorPool | None = None
) -> Message:
    """``data`` (parsed JSON) as a ``kind``: unknown fields and wrong types refused."""
    if not isinstance(data, dict):
        raise BadRequest(
            f"{where}: expected a JSON object for {kind.DESCRIPTOR.full_name}, "
            f"got {type(data).__name__}"
        )
    try:
        return json_format.ParseDict(data, kind(), descriptor_pool=pool)
    except (json_format.ParseError, TypeError, ValueError) as e:
        # TypeError: JSON of the wrong shape (an object where a wrapper type wants a string)
        why = str(e).splitlines()[0]  # json_format goes on to list every field
        raise BadRequest(f"{where} does not fit {kind.DESCRIPTOR.full_name}: {why}") from None


def request(
    kind: type[Message],
    *,
    body: str,
    content: bytes,
    variables: dict[str, str],
    query: Iterable[tuple[str, str]],
    pool: DescriptorPool | None = None,
) -> Message:
    """The request an HTTP call means, by the rule's ``body``."""
    desc = cast(Descriptor, kind.DESCRIPTOR)
    data: dict[str, Any] = {}
    if body == "*":
        data = loads(content or b"{}", "the request body")
        if not isinstance(data, dict):
            raise BadRequest(f"the request body: expected a JSON object for {desc.full_name}")
    elif body:
        field = _field(desc, body, f"body field {body!r}")
        if content:
            data[field.json_name] = loads(content, "the request body")
    for path, value in variables.items():
        _set(data, desc, path, value, f"path variable {path!r}", repeated=False)
    if body != "*":
        for key, value in query:
            _set(data, desc, key, value, f"query parameter {key!r}", repeated=True)
    return message(kind, data, "the request", pool)


def reply(answer: Message, response_body: str = "", pool: DescriptorPool | None = None) -> Any:
    """``answer`` as proto3 JSON; with ``response_body``, that field of it alone."""
    data = json_format.MessageToDict(answer, descriptor_pool=pool)
    if not response_body:
        return data
    field = answer.DESCRIPTOR.fields_by_name[response_body]
    return data.get(field.json_name)


def _field(desc: Descriptor, name: str, where: str) -> FieldDescriptor:
    field = desc.fields_by_name.get(name) or _by_json_name(desc, name)
    if field is None:
        raise BadRequest(f"{where}: {desc.full_name} has no field {name!r}")
    return field


def _by_json_name(desc: Descriptor, name: str) -> FieldDescriptor | None:
    return next((f for f in desc.fields if f.json_name == name), None)


def _set(
    data: dict[str, Any], desc: Descriptor, path: str, value: str, where: str, repeated: bool
) -> None:
    """Set the field at dotted ``path`` to ``value`` (text) in ``data``, JSON-shaped."""
    *parents, leaf = path.split(".")
    for name in parents:
        field = _field(desc, name, where)
        if field.message_type is None or _is_repeated(field):
            raise BadRequest(f"{where}: {desc.full_name}.{name} is not a message field")
        data = data.setdefault(field.json_name, {})
        if not isinstance(data, dict):
            raise BadRequest(f"{where}: {field.full_name} is set twice")
        desc = field.message_type
    field = _field(desc, leaf, where)
    scalar = _scalar(field, value, where)
    if _is_repeated(field):
        if not repeated:
            raise BadRequest(f"{where}: {field.full_name} is repeated")
        data.setdefault(field.json_name, []).append(scalar)
    else:
        data[field.json_name] = scalar


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _scalar(field: FieldDescriptor, value: str, where: str) -> Any:
    """Text as the JSON value proto3 JSON reads for ``field``: numbers, enums and
    well-known types read text as it is; a bool does not."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise BadRequest(f"{where}: {field.full_name} is a bool: true or false, not {value!r}")
        return value == "true"
    if field.message_type is not None and field.message_type.full_name.startswith(
        "google.protobuf."
    ):
        return value  # Timestamp, Duration, FieldMask, wrappers: their JSON is text
    if field.message_type is not None:
        raise BadRequest(f"{where}: {field.full_name} is a message, not a value")
    return value
