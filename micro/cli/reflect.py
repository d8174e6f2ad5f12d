"""JSON requests for messages the CLI knows from reflection (``micro.reflection``):
bad input is one line naming where it came from."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from micro.cli.common import CliError
from micro.method import Method


def kind_name(m: Method[Any, Any]) -> str:
    return {
        "unary_unary": "unary",
        "unary_stream": "server streaming",
        "stream_unary": "client streaming",
        "stream_stream": "bidi streaming",
    }[m.kind]


def loads(text: str, where: str) -> Any:
    """JSON text, or one line naming where it came from and what is wrong."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"invalid JSON in {where}: {e}") from None


def fill(kind: type[Message], data: Any, where: str) -> Message:
    """``data`` (parsed JSON) as a ``kind`` message."""
    try:
        return json_format.ParseDict(data, kind())
    except (json_format.ParseError, TypeError, ValueError) as e:
        # TypeError: JSON of the wrong shape (an object where a wrapper type wants a string)
        raise CliError(f"{where} does not fit {kind.DESCRIPTOR.full_name}: {e}") from None
