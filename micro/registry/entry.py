"""One registry entry as stored by key-value backends (etcd, NATS KV): the JSON of a
``Service`` with exactly one node, and a decoder that checks every field.

The store is shared with other processes and tools, so a value may be anything; a
malformed one is skipped with a warning naming its key, and discovery goes on.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from micro.registry.base import Endpoint, Node, RegistryError, Service

log = logging.getLogger("micro.registry")


# What is parsed at all. An entry nests four deep (entry, endpoints, endpoint,
# metadata); a value nested far deeper would exhaust the parser's recursion.
MAX_SIZE = 1 << 20  # bytes
MAX_DEPTH = 16

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string: brackets in it do not nest
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


class Malformed(ValueError):
    """A stored value is not a valid entry; the message says which field."""


def encode(one: Service) -> bytes:
    """``one`` (a service with a single node) as compact JSON."""
    data = json.dumps(document(one), separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_SIZE:
        raise RegistryError(
            f"service {one.name!r} is too large to register ({len(data)} bytes, at most {MAX_SIZE})"
        )
    return data


def document(one: Service) -> dict[str, Any]:
    """``one`` (a service with a single node) as a JSON-ready dict."""
    (node,) = one.nodes
    return {
        "name": one.name,
        "version": one.version,
        "metadata": dict(one.metadata),
        "endpoints": [
            {
                "name": e.name,
                "request": e.request,
                "response": e.response,
                "metadata": dict(e.metadata),
            }
            for e in one.endpoints
        ],
        "node": {"id": node.id, "address": node.address, "metadata": dict(node.metadata)},
    }


def decode_entry(key: str, value: bytes, where: str) -> Service | None:
    """The entry stored under ``key``, or ``None`` (logged, naming ``where`` and the
    key) when it is malformed."""
    try:
        return decode(value)
    except Malformed as e:
        log.warning("%s: skipping malformed entry %r: %s", where, key, e)
        return None


def decode(data: bytes) -> Service:
    """The service with one node that ``encode`` wrote; ``Malformed`` otherwise."""
    return from_document(parse(data))


def parse(data: bytes) -> Any:
    """``data`` as JSON, if it is small and shallow enough to be an entry;
    ``Malformed`` otherwise."""
    if len(data) > MAX_SIZE:
        raise Malformed(f"{len(data)} bytes, more than an entry's {MAX_SIZE}")
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    for _ in range(MAX_DEPTH):  # each pass removes one level of nesting
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    if brackets:
        raise Malformed(f"not JSON: brackets unbalanced or nested more than {MAX_DEPTH} deep")
    try:
        return json.loads(data)
    except ValueError as e:
        raise Malformed(f"not JSON: {e}") from None


def from_document(doc: Any) -> Service:
    """The service with one node that ``document`` made; ``Malformed`` otherwise."""
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    node = doc.get("node")
    if not isinstance(node, dict):
        raise Malformed("'node' is missing or not an object")
    endpoints = doc.get("endpoints", [])
    if not isinstance(endpoints, list) or not all(isinstance(e, dict) for e in endpoints):
        raise Malformed("'endpoints' is not a list of objects")
    return Service(
        name=text(doc, "name"),
        version=text(doc, "version", ""),
        metadata=_labels(doc, "metadata"),
        endpoints=tuple(
            Endpoint(
                text(e, "name"), text(e, "request"), text(e, "response"), _labels(e, "metadata")
            )
            for e in endpoints
        ),
        nodes=(Node(text(node, "id"), text(node, "address"), _labels(node, "metadata")),),
    )


def text(doc: dict[str, Any], key: str, default: str | None = None) -> str:
    """``doc[key]``, a string (non-empty unless a ``default`` is given)."""
    value = doc.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise Malformed(f"{key!r} is missing or not a non-empty string")
    return value


def _labels(doc: dict[str, Any], key: str) -> dict[str, str]:
    value = doc.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise Malformed(f"{key!r} is not a map of strings")
    return value
