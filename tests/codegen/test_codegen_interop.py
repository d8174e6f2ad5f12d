"""``--micro_out`` alone, beside ``_pb2`` modules that are already installed, and calls
from a generated client to a gRPC server that knows nothing of micro.

grpcio-health-checking ships ``grpc_health.v1.health_pb2`` but not health.proto, so
protoc reads the file from the installed module's descriptor (``--descriptor_set_in``);
googleapis-common-protos ships its .proto files, so protoc reads those."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc.aio
import pytest
from codegen_support import round_trip, script, tree
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import micro
from micro import errors

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def protoc_micro_only(out: Path, *args: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--plugin=protoc-gen-micro={script('protoc-gen-micro')}",
            f"--micro_out={out}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")


def load(path: Path) -> ModuleType:
    """Import a generated file by path: its directory (``grpc_health/v1``) is a package
    that is installed elsewhere, so it cannot be imported by its dotted name."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def health_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("health")
    installed = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(installed.file.add())
    descriptors = out.parent / "health-descriptors.pb"
    descriptors.write_bytes(installed.SerializeToString())
    protoc_micro_only(out, f"--descriptor_set_in={descriptors}", health_pb2.DESCRIPTOR.name)
    assert list(tree(out)) == ["grpc_health/v1/health_micro.py"]
    return out


@pytest.fixture(scope="module")
def health_micro(health_out: Path) -> ModuleType:
    return load(health_out / "grpc_health" / "v1" / "health_micro.py")


def test_generated_module_uses_the_installed_pb2(health_micro: ModuleType) -> None:
    method = health_micro.HealthMethods.check
    assert method.path == "/grpc.health.v1.Health/Check"
    assert method.request is health_pb2.HealthCheckRequest
    assert method.response is health_pb2.HealthCheckResponse
    assert health_micro.HealthMethods.watch.kind == "unary_stream"


async def test_calls_a_plain_grpc_health_server(health_micro: ModuleType) -> None:
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # not in the stubs
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("corpus", SERVING)
    request = health_pb2.HealthCheckRequest(service="corpus")
    try:
        async with micro.Client() as client:
            options = micro.CallOptions(address=f"127.0.0.1:{port}")
            stub = health_micro.HealthClient("health", client, options=options)
            sync_stub = health_micro.HealthSyncClient("health", client, options=options)

            assert (await stub.check(request)).status == SERVING
            with pytest.raises(errors.NotFound):
                await stub.check(health_pb2.HealthCheckRequest(service="unknown"))

            watch = stub.watch(request)
            assert (await anext(watch)).status == SERVING
            await servicer.set("corpus", NOT_SERVING)
            assert (await anext(watch)).status == NOT_SERVING
            await watch.aclose()

            reply = await asyncio.to_thread(sync_stub.check, request)
            assert reply.status == NOT_SERVING
    finally:
        await server.stop(None)


async def test_serves_health_through_micro(health_micro: ModuleType) -> None:
    assert await round_trip(health_micro) == 3


@pytest.mark.parametrize(
    ("proto", "service", "methods"),
    [
        ("google/longrunning/operations_proto.proto", "google.longrunning.Operations", 5),
        ("google/cloud/location/locations.proto", "google.cloud.location.Locations", 2),
    ],
)
async def test_googleapis_services(tmp_path: Path, proto: str, service: str, methods: int) -> None:
    import google.api  # type: ignore[import-untyped]  # noqa: F401  (the .proto files ship inside this package)

    site = Path(sys.modules["google.api"].__path__[0]).parents[1]
    assert (site / proto).is_file()
    protoc_micro_only(tmp_path, f"-I{site}", proto)
    module = load(tmp_path / proto.replace(".proto", "_micro.py"))
    found = [
        v.__service__.name
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, micro.Handler) and v is not micro.Handler
    ]
    assert found == [service]
    assert await round_trip(module) == methods
