"""Rewrite the golden files from what ``micro gen`` makes today: ``make golden``
after an intended change to the templates or naming rules, then review the diff.
tests/codegen/test_codegen_golden.py only ever compares."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from codegen_support import GOLDEN, PROTOS, ROOT, micro_gen

# Each golden file's top directory says what it is generated from: (include root, input).
SOURCES = {
    "greeter": (ROOT / "proto", ROOT / "proto" / "greeter"),
    "corpus": (PROTOS, PROTOS),
}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for include, source in SOURCES.values():
            done = micro_gen("-I", str(include), "--out", str(out), str(source))
            if done.returncode != 0:
                print(f"micro gen {source} failed:\n{done.stderr}", file=sys.stderr)
                return 1
        for golden in sorted(p for p in GOLDEN.rglob("*_micro.py")):
            name = golden.relative_to(GOLDEN)
            generated = out / name
            if not generated.is_file():
                print(f"{name}: micro gen no longer makes it", file=sys.stderr)
                return 1
            if generated.read_text() != golden.read_text():
                golden.write_text(generated.read_text())
                print(f"rewrote tests/golden/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
