"""Where things are (repository, generated code, tools) and what the run ran on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
GEN = ROOT / "examples" / "gen"


def venv_tool(name: str) -> Path:
    """An executable installed beside this interpreter (the venv's ``bin``)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: {name} not found; run `make venv`")
    return Path(found)


def well_known_types() -> Path:
    """grpc_tools' copy of the well-known .proto files (google/protobuf/*.proto)."""
    import grpc_tools

    return Path(grpc_tools.__file__).parent / "_proto"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def describe() -> dict[str, Any]:
    """The absolute environment: figures from another machine are not comparable."""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    status = _git("status", "--porcelain", "--", "micro", "protoc_gen_micro", "templates")
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "grpcio": _version("grpcio"),
        "grpcio_tools": _version("grpcio-tools"),
        "protobuf": _version("protobuf"),
        "micro_grpc": _version("micro-grpc"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
