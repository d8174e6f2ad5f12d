"""Generated text pinned in tests/golden: a change to the template or the naming rules
shows up as a reviewable diff. The test only compares; ``make golden`` rewrites the
files after an intended change."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from codegen_support import GOLDEN, ROOT, micro_gen


@pytest.fixture(scope="module")
def greeter_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("greeter")
    proto = ROOT / "proto" / "greeter" / "v1" / "greeter.proto"
    done = micro_gen("-I", str(ROOT / "proto"), "--out", str(out), str(proto))
    assert done.returncode == 0, done.stderr
    return out


def check(golden: Path, generated: Path) -> None:
    text = generated.read_text()
    assert golden.is_file(), f"{golden} is missing: copy it from {generated}, then review it"
    expected = golden.read_text()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            str(golden.relative_to(ROOT)),
            "generated",
        )
    )
    assert text == expected, f"generated output differs (`make golden` to accept):\n{diff}"


def test_greeter(greeter_out: Path) -> None:
    name = "greeter/v1/greeter_micro.py"
    check(GOLDEN / name, greeter_out / name)


@pytest.mark.parametrize("name", ["corpus/comments_micro.py", "corpus/multi_micro.py"])
def test_corpus(corpus_out: Path, name: str) -> None:
    check(GOLDEN / name, corpus_out / name)
