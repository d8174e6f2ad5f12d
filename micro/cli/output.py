"""Tables for people (rich), JSON for scripts: each command builds rows once and
chooses here how they are shown."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def emit(data: Any) -> None:
    """One JSON document on stdout, indented: a reply for people, a table as JSON."""
    print(json.dumps(data, indent=2, sort_keys=False), flush=True)


def line(data: Any) -> None:
    """One JSON object per line, flushed: for streams read while they run."""
    print(json.dumps(data, separators=(",", ":")), flush=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout; plain (no colour) when stdout is not a terminal."""
    from rich.console import Console  # only a person's output needs rich
    from rich.table import Table

    shown = Table(title=title, title_justify="left", box=None, header_style="bold")
    for column in columns:
        shown.add_column(column, overflow="fold")  # ids and addresses stay whole
    for row in rows:
        shown.add_row(*("" if v is None else str(v) for v in row))
    # Piped output is not cut to 80 columns: a column is as wide as its widest value.
    width = None if sys.stdout.isatty() else 1000
    Console(width=width).print(shown)


def note(text: str) -> None:
    """Progress for people, on stderr, so stdout stays data."""
    print(text, file=sys.stderr, flush=True)


def message(msg: Message) -> dict[str, Any]:
    """A message as protobuf's JSON mapping (lowerCamelCase names, enums by name)."""
    data: dict[str, Any] = json_format.MessageToDict(msg)
    return data


def labels(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
