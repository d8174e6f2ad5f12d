"""Where the templates and shipped .proto files are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    # A wheel carries them inside the package; a source checkout (or an editable
    # install) has them at the repository's top level.
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"micro-grpc is installed without its {name}/ directory")


def templates_dir() -> Path:
    return _find("templates")


def proto_dir() -> Path:
    """Include root holding ``micro/options.proto``."""
    return _find("proto")
