"""Shared by runtime tests: echo.proto generated once (importing this puts it on the path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
GEN = HERE.parent / "gen" / "runtime"
TEMPLATE = HERE.parents[1] / "templates" / "micro_module.py.j2"


def _generate() -> None:
    """Generate echo.proto unless the output is newer than it and than the template
    (collection imports it)."""
    out = GEN / "echo_micro.py"
    sources = (HERE / "echo.proto", TEMPLATE)
    if out.exists() and all(out.stat().st_mtime >= p.stat().st_mtime for p in sources):
        return
    GEN.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "micro",
            "gen",
            "-I",
            str(HERE),
            "--out",
            str(GEN),
            str(HERE / "echo.proto"),
        ],
        check=True,
        capture_output=True,
    )


_generate()
sys.path.insert(0, str(GEN))


from collections.abc import Awaitable, Callable  # noqa: E402

from echo_node import Echo  # noqa: E402

import micro  # noqa: E402

__all__ = ["GEN", "HERE", "Echo", "Start"]

Start = Callable[..., Awaitable[tuple[micro.Service, Echo]]]
"""``await start(name, version=..., metadata=...)``: one running node and its handler."""
