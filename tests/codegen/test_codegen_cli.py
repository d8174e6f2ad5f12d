"""Running the generator as users do: ``micro gen --package``, plain ``protoc`` with the
plugin, and bad input that must fail with a clear message and leave ``--out`` alone."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from codegen_support import (
    PROTOS,
    ROOT,
    MypyRun,
    micro_gen,
    round_trip,
    script,
    tree,
)

# -- micro gen --package --------------------------------------------------------------


def test_without_package_imports_are_absolute_like_protocs(corpus_out: Path) -> None:
    """Beside ``--python_out``: the same absolute imports protoc's own output uses."""
    mover = (corpus_out / "corpus" / "nested" / "b" / "v2" / "my_service_micro.py").read_text()
    assert "\nimport corpus_nopackage_pb2 as _corpus__nopackage__pb2\n" in mover
    assert "\nfrom corpus.nested.b.v2 import common_pb2 as " in mover
    assert "\nfrom google.protobuf import empty_pb2 as " in mover
    assert not (corpus_out / "corpus" / "__init__.py").exists()


def test_package_output_has_init_files(package_root: Path) -> None:
    pkg = package_root / "corpus_pkg"
    assert sorted(p.parent.relative_to(pkg).as_posix() for p in pkg.rglob("__init__.py")) == [
        ".",
        "corpus",
        "corpus/nested",
        "corpus/nested/a",
        "corpus/nested/a/v1",
        "corpus/nested/b",
        "corpus/nested/b/v2",
    ]


def test_imports_between_generated_files_are_relative(package_root: Path) -> None:
    pkg = package_root / "corpus_pkg"
    generated = [p for p in pkg.rglob("*") if p.suffix in (".py", ".pyi")]
    absolute = re.compile(r"^(from|import) corpus", re.MULTILINE)
    assert [p.name for p in generated if absolute.search(p.read_text())] == []

    service = pkg / "corpus" / "nested" / "a" / "v1"
    for path in (service / "service_micro.py", service / "service_pb2.py"):
        text = path.read_text()
        assert "from .....corpus.nested.b.v2 import common_pb2 as " in text
        assert "from .....corpus.nested.a.v1 import types_pb2 as " in text
    assert (
        "from .....corpus.nested.b.v2 import common_pb2 as "
        in (service / "service_pb2.pyi").read_text()
    )
    root = (pkg / "corpus_nopackage_micro.py").read_text()
    assert "from . import corpus_nopackage_pb2 as _corpus__nopackage__pb2" in root
    assert "from .corpus.nested.a.v1 import types_pb2 as " in root
    # A module at the output root, imported from four packages down.
    mover = pkg / "corpus" / "nested" / "b" / "v2"
    assert (
        "from ..... import corpus_nopackage_pb2 as _corpus__nopackage__pb2"
        in (mover / "my_service_micro.py").read_text()
    )
    assert (
        "from ..... import corpus_nopackage_pb2 as corpus__nopackage__pb2"
        in (mover / "my_service_pb2.py").read_text()
    )


def test_well_known_types_and_installed_modules_stay_absolute(package_root: Path) -> None:
    corpus = package_root / "corpus_pkg" / "corpus"
    wkt = (corpus / "wkt_micro.py").read_text()
    for name in ("any", "duration", "empty", "struct", "timestamp"):
        assert f"from google.protobuf import {name}_pb2 as _google_dot_protobuf_dot_" in wkt
    options = (corpus / "options_pb2.py").read_text()
    assert "from micro import options_pb2 as micro_dot_options__pb2" in options


def test_package_modules_import_by_dotted_name(package_root: Path) -> None:
    service = importlib.import_module("corpus_pkg.corpus.nested.a.v1.service_micro")
    common = service._corpus_dot_nested_dot_b_dot_v2_dot_common__pb2
    assert common.__name__ == "corpus_pkg.corpus.nested.b.v2.common_pb2"
    assert service.ConverterMethods.upgrade.path == "/corpus.nested.a.v1.Converter/Upgrade"
    root = importlib.import_module("corpus_pkg.corpus_nopackage_micro")
    assert root._corpus__nopackage__pb2.__name__ == "corpus_pkg.corpus_nopackage_pb2"


@pytest.mark.parametrize(
    "module",
    [
        "corpus_pkg.corpus.nested.a.v1.service_micro",
        "corpus_pkg.corpus.nested.b.v2.my_service_micro",
        "corpus_pkg.corpus_nopackage_micro",
    ],
)
async def test_package_modules_round_trip(package_root: Path, module: str) -> None:
    assert await round_trip(importlib.import_module(module)) >= 4


def test_package_output_passes_mypy_strict(mypy_package: MypyRun) -> None:
    assert mypy_package.returncode == 0, mypy_package.output
    assert re.search(r"Success: no issues found in \d+ source files", mypy_package.output)


# -- plain protoc ---------------------------------------------------------------------


def protoc(*args: str) -> subprocess.CompletedProcess[str]:
    """grpc_tools' protoc (it adds the well-known types' include path itself)."""
    return subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plain_protoc_with_the_plugin(tmp_path: Path, corpus_out: Path) -> None:
    files = ["corpus/streaming.proto", "corpus/options.proto", "corpus_nopackage.proto"]
    done = protoc(
        f"--plugin=protoc-gen-micro={script('protoc-gen-micro')}",
        f"-I{PROTOS}",
        f"-I{ROOT / 'proto'}",
        f"--python_out={tmp_path}",
        f"--micro_out={tmp_path}",
        *(str(PROTOS / f) for f in files),
    )
    assert (done.returncode, done.stderr) == (0, "")
    written = tree(tmp_path)
    stems = [f.removesuffix(".proto") for f in files]
    assert sorted(written) == sorted(f"{s}{end}" for s in stems for end in ("_micro.py", "_pb2.py"))
    for stem in stems:
        # The same bytes as ``micro gen`` produced for the whole corpus.
        assert written[f"{stem}_micro.py"] == (corpus_out / f"{stem}_micro.py").read_bytes()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("fast", "unknown option 'fast': protoc-gen-micro takes package=…"),
        ("package", "option package needs a value: package=…"),
        ("package=a.b,package=a.c", "option package given twice"),
        ("package=app.class", "package=app.class: not a dotted Python module name"),
    ],
)
def test_plugin_refuses_bad_options(tmp_path: Path, given: str, message: str) -> None:
    done = protoc(
        f"--plugin=protoc-gen-micro={script('protoc-gen-micro')}",
        f"-I{PROTOS}",
        f"--micro_out={given}:{tmp_path}",
        str(PROTOS / "corpus/streaming.proto"),
    )
    assert done.returncode != 0
    assert f"--micro_out: {message}" in done.stderr
    assert tree(tmp_path) == {}


def test_plugin_package_option_gives_an_importable_typed_package(tmp_path: Path) -> None:
    """protoc's own python and pyi outputs beside ``--micro_opt=package=app.gen``: the
    package imports by its dotted name and passes mypy --strict."""
    out = tmp_path / "app" / "gen"
    out.mkdir(parents=True)
    done = protoc(
        f"--plugin=protoc-gen-micro={script('protoc-gen-micro')}",
        f"-I{ROOT / 'proto'}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--micro_out={out}",
        "--micro_opt=package=app.gen",
        str(ROOT / "proto" / "greeter" / "v1" / "greeter.proto"),
    )
    assert (done.returncode, done.stderr) == (0, "")
    module = (out / "greeter" / "v1" / "greeter_micro.py").read_text()
    assert "\nfrom ...greeter.v1 import greeter_pb2 as " in module
    use = tmp_path / "use.py"
    use.write_text(
        "import micro\n"
        "from app.gen.greeter.v1.greeter_micro import GreeterHandler\n"
        "from app.gen.greeter.v1.greeter_pb2 import HelloReply, HelloRequest\n\n\n"
        "class Greeter(GreeterHandler):\n"
        "    async def say_hello(self, request: HelloRequest, ctx: micro.Context) -> HelloReply:\n"
        "        return HelloReply(message=request.name)\n\n\n"
        "print(Greeter.__mro__[1].__name__)\n"
    )
    ran = subprocess.run(
        [sys.executable, str(use)], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert (ran.returncode, ran.stdout) == (0, "GreeterHandler\n"), ran.stderr
    mypy = [script("mypy"), "--strict", "--namespace-packages", "--explicit-package-bases"]
    typed = subprocess.run(
        [*mypy, "use.py", "app"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert typed.returncode == 0, typed.stdout


# -- bad input ------------------------------------------------------------------------

GOOD = """\
syntax = "proto3";
package good;
service Fine { rpc Get(Thing) returns (Thing); }
message Thing { string id = 1; }
"""


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output directory that already holds earlier output."""
    out = tmp_path / "out"
    (out / "good").mkdir(parents=True)
    (out / "good" / "good_micro.py").write_text("# generated yesterday\n")
    return out


def failing_gen(tmp_path: Path, out: Path, bad: str) -> str:
    """Run ``micro gen`` on good.proto and a bad.proto in one run; return its stderr
    after checking that it failed cleanly and wrote nothing."""
    protos = tmp_path / "protos"
    (protos / "good").mkdir(parents=True)
    (protos / "good" / "good.proto").write_text(GOOD)
    (protos / "bad.proto").write_text(bad)
    before = tree(out)
    done = micro_gen("-I", str(protos), "--out", str(out), str(protos))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert tree(out) == before
    return done.stderr


def test_syntax_error_names_file_and_line(tmp_path: Path, out: Path) -> None:
    bad = 'syntax = "proto3";\npackage bad;\nmessage A {\n  string name = 1\n}\n'
    stderr = failing_gen(tmp_path, out, bad)
    assert re.search(r"bad\.proto:5:\d+: Expected \";\"", stderr), stderr
    assert "micro gen: protoc failed" in stderr


def test_missing_import_names_file_and_line(tmp_path: Path, out: Path) -> None:
    bad = 'syntax = "proto3";\n\nimport "nowhere/missing.proto";\n'
    stderr = failing_gen(tmp_path, out, bad)
    assert re.search(r"bad\.proto:3:\d+: Import \"nowhere/missing.proto\" was not found", stderr)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "service Vault { rpc _Secret(Thing) returns (Thing); }",
            "bad.proto: service Vault, method _Secret: a name starting with '_' is reserved",
        ),
        (
            "service _Hidden { rpc Get(Thing) returns (Thing); }",
            "bad.proto: service _Hidden: a name starting with '_' is reserved",
        ),
        (
            "service Keys { rpc Get(Thing.None) returns (Thing); }",
            "bad.proto: service Keys, method Get: message type bad.Thing.None is named after a "
            "Python keyword",
        ),
        (
            "service Keys { rpc Get(Thing) returns (def); }\nmessage def {}",
            "bad.proto: service Keys, method Get: message type bad.def is named after a "
            "Python keyword",
        ),
    ],
)
def test_name_without_a_safe_spelling_is_refused(
    tmp_path: Path, out: Path, bad: str, message: str
) -> None:
    header = 'syntax = "proto3";\npackage bad;\nmessage Thing { message None {} }\n'
    stderr = failing_gen(tmp_path, out, header + bad + "\n")
    assert message in stderr, stderr


def test_missing_input_is_named(tmp_path: Path) -> None:
    done = micro_gen("--out", str(tmp_path), str(tmp_path / "nope.proto"))
    assert done.returncode == 1
    assert done.stderr == f"micro gen: {tmp_path / 'nope.proto'}: no such file or directory\n"
    (tmp_path / "empty").mkdir()
    done = micro_gen("--out", str(tmp_path), str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "no .proto files in this directory" in done.stderr
    assert tree(tmp_path) == {}


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ("app.gen", "--package app.gen: --out {out} is not its directory (expected a path "
         "ending in app/gen)"),
        ("app.class", "--package 'app.class': not a dotted Python module name"),
    ],
)  # fmt: skip
def test_package_must_name_the_out_directory(
    tmp_path: Path, out: Path, package: str, message: str
) -> None:
    (tmp_path / "good.proto").write_text(GOOD)
    before = tree(out)
    done = micro_gen("--out", str(out), "--package", package, str(tmp_path / "good.proto"))
    assert done.returncode == 1
    assert done.stderr == f"micro gen: {message.format(out=out)}\n"
    assert tree(out) == before


# -- the import root without -I ----------------------------------------------------


@pytest.mark.parametrize("given", ["proto/good/v1", "proto/good", "proto", "proto/good/v1/x.proto"])
def test_import_root_comes_from_the_package(tmp_path: Path, given: str) -> None:
    """Whatever part of proto/ is given, a module of package good.v1 is imported as
    good.v1 (was: v1, or proto.good.v1, neither importable)."""
    proto = tmp_path / "proto" / "good" / "v1"
    proto.mkdir(parents=True)
    (proto / "x.proto").write_text(GOOD.replace("package good;", "package good.v1;"))
    done = micro_gen("--out", "gen", given, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module = (tmp_path / "gen" / "good" / "v1" / "x_micro.py").read_text()
    assert "\nfrom good.v1 import x_pb2 as " in module


def test_unclear_import_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "x.proto").write_text(GOOD.replace("package good;", "package good.v1;"))
    done = micro_gen("--out", "gen", "protos/x.proto", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        "micro gen: protos/x.proto: package good.v1 is not in a good/v1/ directory, so its "
        "import root is unclear: pass -I DIR, the directory its imports are relative to\n"
    )
    assert not (tmp_path / "gen").exists()
    given = micro_gen("-I", "protos", "--out", "gen", "protos/x.proto", cwd=tmp_path)
    assert given.returncode == 0, given.stderr
