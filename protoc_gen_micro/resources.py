"""Where the templates and shipped .proto files are, installed or in a checkout."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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


def micro_options() -> ModuleType:
    """``micro/options_pb2`` loaded on its own: importing it as ``micro.options_pb2``
    would import the whole runtime (grpc and all) and triple the plugin's start-up
    time. Both copies share protobuf's default pool, so their extension is the same."""
    spec = importlib.util.find_spec("micro")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("micro-grpc is installed without its micro package")
    path = Path(next(iter(spec.submodule_search_locations))) / "options_pb2.py"
    module_spec = importlib.util.spec_from_file_location("protoc_gen_micro._options_pb2", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
