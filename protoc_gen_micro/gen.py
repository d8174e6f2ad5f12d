"""``micro gen``: protoc with the python, mypy and micro outputs in one run.

grpc_tools ships protoc and the well-known types, so no system protoc is needed.
Output is built in a scratch directory and moved into place only when every step
succeeded: a failed run leaves ``--out`` as it was.
"""

from __future__ import annotations

import keyword
import re
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from protoc_gen_micro.resources import proto_dir


class GenError(Exception):
    """``micro gen`` could not produce output; the message says why."""


_PLUGINS = {
    "micro": "from protoc_gen_micro.plugin import main; main()",
    "mypy": "from mypy_protobuf.main import main; main()",
}


def generate(
    inputs: Sequence[str],
    *,
    includes: Sequence[str] = (),
    out: str = ".",
    package: str | None = None,
) -> list[Path]:
    """Generate ``_pb2.py``, ``_pb2.pyi`` and ``_micro.py`` for ``inputs`` into ``out``.

    ``inputs`` are .proto files or directories (searched recursively). Returns the
    files written, relative to ``out``.
    """
    from grpc_tools import protoc

    if package:
        _check_package(package, out)
    files = _expand(inputs)
    include_dirs = [*includes] if includes else list(dict.fromkeys(map(_root, files)))
    wkt = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="micro-gen-") as scratch:
        tmp = Path(scratch) / "out"
        tmp.mkdir()
        args = [
            "protoc",
            *(f"-I{d}" for d in [*include_dirs, str(proto_dir()), str(wkt)]),
            f"--python_out={tmp}",
            f"--mypy_out=quiet:{tmp}",
            f"--micro_out={tmp}",
            *(f"--plugin=protoc-gen-{name}={_launcher(scratch, name)}" for name in _PLUGINS),
            *files,
        ]
        if protoc.main(args) != 0:
            raise GenError("protoc failed; its messages above say why")
        written = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
        if package:
            written = _make_package(tmp, written)
        destination = Path(out)
        for rel in written:
            target = destination / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp / rel), target)
    return written


def _check_package(package: str, out: str) -> None:
    """``--out`` must be the package's own directory, so the dotted name imports it."""
    parts = package.split(".")
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise GenError(f"--package {package!r}: not a dotted Python module name")
    if Path(out).resolve().parts[-len(parts) :] != tuple(parts):
        where = "/".join(parts)
        raise GenError(
            f"--package {package}: --out {out} is not its directory (expected a path "
            f"ending in {where})"
        )


def _expand(inputs: Sequence[str]) -> list[str]:
    """Input paths -> .proto files (directories searched recursively)."""
    files: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*.proto"))
            if not found:
                raise GenError(f"{raw}: no .proto files in this directory")
            files += found
        elif path.is_file():
            files.append(raw)
        else:
            raise GenError(f"{raw}: no such file or directory")
    return files


_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)\s*;", re.MULTILINE)


def _root(file: str) -> str:
    """The import root of ``file`` without ``-I``: the directory its package's path
    starts in (``proto/greeter/v1/greeter.proto`` of ``package greeter.v1`` → ``proto``),
    as protoc's python output imports a module by its path from that root."""
    path = Path(file)
    found = _PACKAGE.search(path.read_text(errors="replace"))
    package = found[1] if found else ""
    parts = package.split(".") if package else []
    parent = path.parent.parts
    if parts and tuple(parent[-len(parts) :]) != tuple(parts):
        raise GenError(
            f"{file}: package {package} is not in a {'/'.join(parts)}/ directory, so its "
            "import root is unclear: pass -I DIR, the directory its imports are relative to"
        )
    kept = parent[: len(parent) - len(parts)]
    return str(Path(*kept)) if kept else "."


def _launcher(scratch: str, name: str) -> str:
    """An executable that runs a plugin with this interpreter, whatever PATH says."""
    path = Path(scratch) / f"protoc-gen-{name}"
    command = shlex.join([sys.executable, "-c", _PLUGINS[name]])
    path.write_text(f"#!/bin/sh\nexec {command}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


_IMPORT = re.compile(r"^(from ([\w.]+) import (\w+)|import ([\w.]+))( as \w+)?$", re.MULTILINE)


def _make_package(root: Path, written: list[Path]) -> list[Path]:
    """Rewrite imports between generated modules to relative ones, add ``__init__.py``.

    Modules that were not generated in this run (well-known types, installed
    packages such as googleapis-common-protos) keep their absolute imports.
    """
    generated = {".".join(p.with_suffix("").parts) for p in written}

    for rel in written:
        if rel.suffix not in (".py", ".pyi"):
            continue
        depth = len(rel.parts) - 1
        path = root / rel

        def relative(match: re.Match[str], depth: int = depth) -> str:
            module = f"{match[2]}.{match[3]}" if match[2] else match[4]
            if module not in generated:
                return match[0]
            package, _, name = module.rpartition(".")
            return f"from {'.' * (depth + 1)}{package} import {name}{match[5] or ''}"

        path.write_text(_IMPORT.sub(relative, path.read_text()))

    packages = {Path(*p.parts[:i]) for p in written for i in range(len(p.parts))}
    inits = [pkg / "__init__.py" for pkg in sorted(packages)]
    for init in inits:
        (root / init).touch()
    return sorted({*written, *inits})
