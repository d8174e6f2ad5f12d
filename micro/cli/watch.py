"""What ``micro run --reload`` watches: the ``.py`` files under the module's directory,
their modification times polled (no dependency, and it works on every filesystem)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from micro.cli.common import CliError

POLL = 0.3  # seconds between scans of the watched files
MAX_FILES = 5000  # a scan stops here: a module directory is not a whole disk
SKIPPED = {"__pycache__", "node_modules", "venv", ".venv", "build", "dist"}


def directory(module_name: str) -> Path:
    """The directory holding the module's file (its package directory for a package)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as e:
        raise CliError(f"cannot find {module_name!r}: {e}") from None
    if spec is None or spec.origin is None:
        raise CliError(f"cannot find module {module_name!r} (from {os.getcwd()})")
    return Path(spec.origin).resolve().parent


def snapshot(root: Path) -> dict[Path, int]:
    """Modification times (ns) of the ``.py`` files under ``root``, at most MAX_FILES."""
    found: dict[Path, int] = {}
    for parent, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED and not d.startswith(".")]
        for name in names:
            if name.endswith(".py"):
                path = Path(parent, name)
                try:
                    found[path] = path.stat().st_mtime_ns
                except FileNotFoundError:  # removed while we looked
                    continue
                if len(found) >= MAX_FILES:
                    return found
    return found


def changed(before: dict[Path, int], now: dict[Path, int]) -> Path | None:
    """A file added, removed or modified between two snapshots; None if none was."""
    if now == before:
        return None
    return next(iter(set(now.items()) ^ set(before.items())))[0]
