"""Codegen tests: the corpus in tests/protos is generated once per session, as plain
modules (``corpus.streaming_micro``) and as the package ``corpus_pkg``; each output
is type-checked by a single mypy run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from codegen_support import PROTOS, MypyRun, micro_gen, run_mypy


@pytest.fixture(scope="session")
def corpus_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``micro gen`` of the whole corpus, importable by absolute module names."""
    out = tmp_path_factory.mktemp("corpus")
    done = micro_gen("-I", str(PROTOS), "--out", str(out), str(PROTOS))
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(out))
    yield out
    sys.path.remove(str(out))


@pytest.fixture(scope="session")
def package_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``micro gen --package corpus_pkg`` of the corpus; the returned directory holds
    ``corpus_pkg/`` and is on ``sys.path``."""
    root = tmp_path_factory.mktemp("packaged")
    out = root / "corpus_pkg"
    done = micro_gen("-I", str(PROTOS), "--out", str(out), "--package", "corpus_pkg", str(PROTOS))
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


@pytest.fixture(scope="session")
def mypy_corpus(corpus_out: Path, tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    """``mypy --strict`` over the generated corpus (modules and stubs) and the
    typing checks in tests/codegen/typecheck, in one run."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    typing_dir = Path(__file__).parent / "typecheck"
    return run_mypy(
        corpus_out,
        cache,
        "--explicit-package-bases",
        ".",
        *(str(p) for p in sorted(typing_dir.glob("*.py"))),
    )


@pytest.fixture(scope="session")
def mypy_package(package_root: Path, tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    """``mypy --strict`` over the ``corpus_pkg`` package (relative imports)."""
    return run_mypy(package_root, tmp_path_factory.mktemp("mypy-pkg-cache"), "-p", "corpus_pkg")
