"""Every file of the corpus in tests/protos: its generated output imports, matches the
proto's services, passes ``mypy --strict``, and every method round-trips over loopback
through the generated async and blocking clients."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from codegen_support import (
    MypyRun,
    corpus_files,
    declares_services,
    module_name,
    round_trip,
    services,
)
from google.protobuf import descriptor_pool

CORPUS = corpus_files()
SERVICE_FILES = [p for p in CORPUS if declares_services(p)]
TYPE_FILES = [p for p in CORPUS if not declares_services(p)]
TYPECHECK = Path(__file__).parent / "typecheck"


def test_corpus_has_what_the_tests_rely_on() -> None:
    assert len(SERVICE_FILES) >= 10, SERVICE_FILES
    assert TYPE_FILES == ["corpus/nested/a/v1/types.proto", "corpus/nested/b/v2/common.proto"]
    text = {p: (Path(__file__).parents[1] / "protos" / p).read_text() for p in CORPUS}
    assert any('syntax = "proto2"' in t for t in text.values())
    assert any('edition = "2023"' in t for t in text.values())
    assert any(not re.search(r"^package ", t, re.MULTILINE) for t in text.values())


@pytest.mark.parametrize("proto", SERVICE_FILES)
def test_generated_module_matches_the_proto(corpus_out: Path, proto: str) -> None:
    module = importlib.import_module(module_name(proto, "_micro"))
    pb2 = importlib.import_module(module_name(proto, "_pb2"))
    assert module.__file__ == str(corpus_out / proto.replace("-", "_")).replace(
        ".proto", "_micro.py"
    )
    found = services(module)
    declared = list(pb2.DESCRIPTOR.services_by_name.values())
    assert [s.descriptor.name for s in found] == [s.full_name for s in declared]
    for svc, proto_svc in zip(found, declared, strict=True):
        assert len(svc.descriptor.methods) == len(proto_svc.methods)
        for method, proto_method in zip(svc.descriptor.methods, proto_svc.methods, strict=True):
            assert method.path == f"/{proto_svc.full_name}/{proto_method.name}"
            assert method.request.DESCRIPTOR.full_name == proto_method.input_type.full_name
            assert method.response.DESCRIPTOR.full_name == proto_method.output_type.full_name
            assert method.client_streaming == proto_method.client_streaming
            assert method.server_streaming == proto_method.server_streaming
            for cls in (svc.handler, svc.client, svc.sync_client):
                assert callable(getattr(cls, method.name)), (cls, method.name)


@pytest.mark.parametrize("proto", TYPE_FILES)
def test_file_without_services_has_no_micro_module(corpus_out: Path, proto: str) -> None:
    stem = corpus_out / proto.removesuffix(".proto")
    assert stem.with_name(stem.name + "_pb2.py").is_file()
    assert not stem.with_name(stem.name + "_micro.py").exists()
    pb2 = importlib.import_module(module_name(proto, "_pb2"))
    assert pb2.DESCRIPTOR.name == proto
    assert descriptor_pool.Default().FindFileByName(proto) is pb2.DESCRIPTOR


@pytest.mark.parametrize("proto", CORPUS)
def test_mypy_strict(corpus_out: Path, mypy_corpus: MypyRun, proto: str) -> None:
    stem = proto.removesuffix(".proto").replace("-", "_")
    outputs = [f"{stem}_pb2.pyi"] + ([f"{stem}_micro.py"] if proto in SERVICE_FILES else [])
    for path in outputs:
        assert (corpus_out / path).is_file(), path
        assert mypy_corpus.errors_in(path) == [], mypy_corpus.output


def test_mypy_checked_every_output(corpus_out: Path, mypy_corpus: MypyRun) -> None:
    checked = len(list(corpus_out.rglob("*_micro.py"))) + len(list(corpus_out.rglob("*.pyi")))
    checked += len(list(TYPECHECK.glob("*.py")))
    expected_errors = len(_marked(TYPECHECK / "usage_bad.py"))
    summary = f"Found {expected_errors} errors in 1 file (checked {checked} source files)"
    assert summary in mypy_corpus.output, mypy_corpus.output


def test_user_code_against_generated_modules_type_checks(mypy_corpus: MypyRun) -> None:
    path = str(TYPECHECK / "usage_ok.py")
    assert mypy_corpus.errors_in(path) == []


def test_misuse_of_generated_modules_fails_type_checking(mypy_corpus: MypyRun) -> None:
    """Each line of usage_bad.py marked ``# E: code`` fails with that code, no other."""
    path = TYPECHECK / "usage_bad.py"
    found = set()
    for line in mypy_corpus.errors_in(str(path)):
        match = re.match(rf"{re.escape(str(path))}:(\d+): error: .*\[([\w-]+)\]$", line)
        assert match, line
        found.add((int(match[1]), match[2]))
    assert found == _marked(path), mypy_corpus.output


def _marked(path: Path) -> set[tuple[int, str]]:
    lines = path.read_text().splitlines()
    return {
        (n, m[1]) for n, line in enumerate(lines, 1) if (m := re.search(r"# E: ([\w-]+)$", line))
    }


@pytest.mark.parametrize("proto", SERVICE_FILES)
async def test_every_method_round_trips(corpus_out: Path, proto: str) -> None:
    module = importlib.import_module(module_name(proto, "_micro"))
    pb2 = importlib.import_module(module_name(proto, "_pb2"))
    declared = sum(len(s.methods) for s in pb2.DESCRIPTOR.services_by_name.values())
    assert await round_trip(module) == declared
