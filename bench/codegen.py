"""Codegen: ``protoc --micro_out`` against grpc's own ``--grpc_python_out``.

Both run as ``python -m grpc_tools.protoc`` on the same input, so the comparison is
what a user waits for: grpc's generator is C++ inside protoc, micro's is a Python
plugin protoc starts as a subprocess. A third variant times the plugin in-process
(``protoc_gen_micro.plugin.generate`` on the CodeGeneratorRequest protoc really
sends, captured once), which separates the plugin's own work from interpreter
start-up and imports.

Inputs: the codegen corpus (every .proto under tests/protos/, or proto/ while the
corpus is missing) and a synthetic file of 200 services x 20 methods.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from google.protobuf.compiler import plugin_pb2

from bench import measure
from bench.environment import ROOT, venv_tool, well_known_types
from protoc_gen_micro.plugin import generate

GRPC = "grpc"
MICRO = "micro"
INPROCESS = "micro-inprocess"
VARIANTS = (GRPC, MICRO, INPROCESS)
PROTOC_TIMEOUT_S = 120.0  # one protoc run; far above the slowest input measured


@dataclass(frozen=True)
class Settings:
    min_rounds: int
    max_rounds: int
    budget_s: float  # per input: stop adding rounds past this (after min_rounds)
    services: int  # synthetic file
    methods: int

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(min_rounds=3, max_rounds=3, budget_s=5.0, services=200, methods=20)
        return cls(min_rounds=7, max_rounds=15, budget_s=25.0, services=200, methods=20)


@dataclass(frozen=True)
class Input:
    """What one protoc run compiles: files named relative to an include root."""

    name: str
    includes: tuple[Path, ...]
    files: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # corpus files one of the generators rejects


class ProtocError(RuntimeError):
    pass


def protoc(source: Input, *outputs: str) -> float:
    """Run ``grpc_tools.protoc`` with ``outputs`` flags; wall time in seconds."""
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *(f"-I{d}" for d in source.includes),
        *outputs,
        *source.files,
    ]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, timeout=PROTOC_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise ProtocError(message[-1] if message else f"protoc exited {done.returncode}")
    return elapsed


def micro_flags(out: Path) -> tuple[str, ...]:
    return (f"--plugin=protoc-gen-micro={venv_tool('protoc-gen-micro')}", f"--micro_out={out}")


def grpc_flags(out: Path) -> tuple[str, ...]:
    return (f"--grpc_python_out={out}",)


_CAPTURE = """\
#!{python}
import sys
with open({request!r}, "wb") as f:
    f.write(sys.stdin.buffer.read())
with open({response!r}, "rb") as f:
    sys.stdout.buffer.write(f.read())
"""


def capture_request(source: Input, work: Path) -> plugin_pb2.CodeGeneratorRequest:
    """The CodeGeneratorRequest protoc sends a plugin for ``source``: a stand-in
    plugin writes its stdin to a file and answers what micro's plugin answers to an
    empty request (no files, but the same supported features and editions, without
    which protoc refuses editions files)."""
    plugin = work / "protoc-gen-capture"
    dump, answer = work / "request.bin", work / "response.bin"
    answer.write_bytes(generate(plugin_pb2.CodeGeneratorRequest()).SerializeToString())
    plugin.write_text(
        _CAPTURE.format(python=sys.executable, request=str(dump), response=str(answer))
    )
    plugin.chmod(0o755)
    out = work / "capture"
    out.mkdir(exist_ok=True)
    protoc(source, f"--plugin=protoc-gen-capture={plugin}", f"--capture_out={out}")
    return plugin_pb2.CodeGeneratorRequest.FromString(dump.read_bytes())


def generate_in_process(request: plugin_pb2.CodeGeneratorRequest) -> float:
    start = time.perf_counter()
    response = generate(request)
    elapsed = time.perf_counter() - start
    if response.error:
        raise ProtocError(response.error)
    return elapsed


# -- inputs -------------------------------------------------------------------


def corpus() -> Input:
    """tests/protos/ when it holds .proto files, else proto/ (found at run time)."""
    includes = (ROOT / "tests" / "protos", ROOT / "proto", well_known_types())
    for root in includes[:2]:
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
        if files:
            label = f"corpus {root.relative_to(ROOT)}/ ({len(files)} files)"
            return Input(label, tuple(d for d in includes if d.is_dir()), tuple(files))
    raise SystemExit("bench: no .proto files under tests/protos/ or proto/")


def compilable(source: Input, work: Path) -> Input:
    """``source`` without the files either generator rejects (a corpus may hold
    deliberate failures); tried file by file only when the whole set fails."""
    out = work / "check"
    out.mkdir(exist_ok=True)
    try:
        protoc(source, *micro_flags(out), *grpc_flags(out))
        return source
    except ProtocError:
        pass
    kept, skipped = [], []
    for name in source.files:
        try:
            protoc(Input(name, source.includes, (name,)), *micro_flags(out), *grpc_flags(out))
            kept.append(name)
        except ProtocError as e:
            skipped.append(f"{name}: {e}")
    if not kept:
        raise SystemExit(f"bench: no file of {source.name} compiles: {skipped[:3]}")
    label = f"{source.name}, {len(skipped)} skipped"
    return Input(label, source.includes, tuple(kept), tuple(skipped))


_KINDS = ("", "stream ")  # client streaming x server streaming: four kinds


def synthetic_proto(services: int, methods: int) -> str:
    """A large file: ``services`` services of ``methods`` methods mixing the four
    streaming kinds, a few messages (nested, enum, repeated, map), comments and
    method options, so the plugin walks everything it supports."""
    lines = [
        'syntax = "proto3";',
        "",
        "package synth.v1;",
        "",
        'import "google/protobuf/timestamp.proto";',
        "",
        "enum Colour {",
        "  COLOUR_UNSPECIFIED = 0;",
        "  COLOUR_RED = 1;",
        "}",
        "",
        "message Thing {",
        "  message Part {",
        "    string name = 1;",
        "  }",
        "  string id = 1;",
        "  repeated Part parts = 2;",
        "  map<string, int64> counts = 3;",
        "  Colour colour = 4;",
        "  google.protobuf.Timestamp updated = 5;",
        "}",
        "",
    ]
    messages = ("Thing", "GetRequest", "ListRequest", "Change")
    for message in messages[1:]:
        lines += [f"message {message} {{", "  string id = 1;", "  Thing thing = 2;", "}", ""]
    for s in range(services):
        lines += [f"// Service number {s}, one of many.", f"service Service{s:03d} {{"]
        for m in range(methods):
            client, server = _KINDS[m % 2], _KINDS[(m // 2) % 2]
            request, response = messages[m % 4], messages[(m + 1) % 4]
            lines.append(
                f"  // Method {m}: {client or 'unary '}request, {server or 'unary '}reply."
            )
            head = f"  rpc Method{m:02d}({client}{request}) returns ({server}{response})"
            if m % 5 == 0:
                lines += [head + " {", "    option idempotency_level = NO_SIDE_EFFECTS;", "  }"]
            elif m % 7 == 0:
                lines += [head + " {", "    option deprecated = true;", "  }"]
            else:
                lines.append(head + ";")
        lines += ["}", ""]
    return "\n".join(lines)


def synthetic(work: Path, services: int, methods: int) -> Input:
    root = work / "synthetic"
    path = root / "synth" / "v1" / "synth.proto"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(synthetic_proto(services, methods))
    name = f"synthetic ({services} services x {methods} methods)"
    return Input(name, (root, well_known_types()), ("synth/v1/synth.proto",))


# -- measurement --------------------------------------------------------------


def measure_input(source: Input, work: Path, settings: Settings) -> dict[str, Any]:
    """Every variant once per round, interleaved, after one warm-up each."""
    work = Path(tempfile.mkdtemp(dir=work))
    micro_out, grpc_out = work / "micro_out", work / "grpc_out"
    micro_out.mkdir()
    grpc_out.mkdir()
    request = capture_request(source, work)
    run: dict[str, Callable[[], float]] = {
        GRPC: lambda: protoc(source, *grpc_flags(grpc_out)),
        MICRO: lambda: protoc(source, *micro_flags(micro_out)),
        INPROCESS: lambda: generate_in_process(request),
    }
    for variant in VARIANTS:  # warm-up: page cache, imports, template compilation
        run[variant]()
    same = same_output(request, micro_out)
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for index in measure.rounds(settings.min_rounds, settings.max_rounds, settings.budget_s):
        for variant in measure.order(VARIANTS, index):
            samples[variant].append(run[variant]())
    result = summarise(source, samples, len(request.file_to_generate))
    result["inprocess_output_matches_plugin"] = same
    return result


def same_output(request: plugin_pb2.CodeGeneratorRequest, out: Path) -> bool:
    """Whether in-process generation wrote what the plugin under protoc wrote: the
    captured request is the one protoc sends, so the two timings do the same work."""
    files = generate(request).file
    return bool(files) and all(
        (out / f.name).is_file() and (out / f.name).read_text() == f.content for f in files
    )


def summarise(source: Input, samples: dict[str, list[float]], files: int) -> dict[str, Any]:
    base = samples[GRPC]
    ratios = {}
    for variant in (MICRO, INPROCESS):
        paired = measure.Spread.of(measure.paired_ratios(base, samples[variant]))
        ratios[f"{variant}/{GRPC}"] = {
            "median_of_medians": measure.Spread.of(samples[variant]).median
            / measure.Spread.of(base).median,
            "paired": paired.as_dict(),
        }
    return {
        "input": source.name,
        "files": files,
        "skipped": list(source.skipped),
        "seconds": {v: measure.Spread.of(s).as_dict() for v, s in samples.items()},
        "samples": samples,
        "ratios": ratios,
    }


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = Settings.for_run(quick)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="micro-bench-codegen-") as tmp:
        work = Path(tmp)
        inputs: Sequence[Callable[[], Input]] = (
            lambda: compilable(corpus(), work),
            lambda: synthetic(work, settings.services, settings.methods),
        )
        for make in inputs:
            source = make()
            log(f"codegen: {source.name}")
            results.append(measure_input(source, work, settings))
    return {"settings": asdict(settings), "variants": list(VARIANTS), "inputs": results}
