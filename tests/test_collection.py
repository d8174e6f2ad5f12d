"""Any subset of the test directories collects, alone or together in either order:
helpers are modules in tests/support (on the path through pytest's ``pythonpath``),
so no test depends on which conftest or directory happened to be imported first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
AREAS = sorted(
    {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("tests/*/test_*.py")}
    | {"bench/tests"}
)
SUBSETS = [
    *([area] for area in AREAS),
    AREAS[::-1],
    ["tests/cli", "tests/broker/test_peer_broker.py"],  # two conftests: cli's, then broker's
    ["tests/broker/test_peer_broker.py", "tests/cli"],
]


@pytest.mark.parametrize("paths", SUBSETS, ids=" ".join)
def test_subset_collects(paths: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
