"""Message payloads: protobuf binary (the default) or protobuf JSON, by content type."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

PROTOBUF = "application/protobuf"
JSON = "application/json"
CONTENT_TYPES = (PROTOBUF, JSON)

M = TypeVar("M", bound=Message)


class CodecError(ValueError):
    """A payload could not be encoded or decoded; the message says which type and why."""


def encode(message: Message, content_type: str = PROTOBUF) -> bytes:
    if content_type == PROTOBUF:
        return message.SerializeToString()
    if content_type == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    raise CodecError(f"unknown content type {content_type!r}: use one of {CONTENT_TYPES}")


def decode(data: bytes, kind: type[M], content_type: str = PROTOBUF) -> M:
    try:
        if content_type == PROTOBUF:
            return kind.FromString(data)
        if content_type == JSON:
            return json_format.Parse(data, kind())
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as e:
        raise CodecError(f"not a valid {kind.DESCRIPTOR.full_name} ({content_type}): {e}") from None
    raise CodecError(f"unknown content type {content_type!r} for {kind.DESCRIPTOR.full_name}")
