"""Generated text pinned in tests/golden: a change to the template or the naming rules
shows up as a reviewable diff. ``UPDATE_GOLDEN=1 pytest tests/codegen`` rewrites the
files after an intended change."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from codegen_support import ROOT, micro_gen

GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def greeter_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("greeter")
    proto = ROOT / "proto" / "greeter" / "v1" / "greeter.proto"
    done = micro_gen("-I", str(ROOT / "proto"), "--out", str(out), str(proto))
    assert done.returncode == 0, done.stderr
    return out


def check(golden: Path, generated: Path) -> None:
    text = generated.read_text()
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"{golden} is missing: run UPDATE_GOLDEN=1 pytest tests/codegen"
    expected = golden.read_text()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            str(golden.relative_to(ROOT)),
            "generated",
        )
    )
    assert text == expected, f"generated output differs (UPDATE_GOLDEN=1 to accept):\n{diff}"


def test_greeter(greeter_out: Path) -> None:
    name = "greeter/v1/greeter_micro.py"
    check(GOLDEN / name, greeter_out / name)


@pytest.mark.parametrize("name", ["corpus/comments_micro.py", "corpus/multi_micro.py"])
def test_corpus(corpus_out: Path, name: str) -> None:
    check(GOLDEN / name, corpus_out / name)
