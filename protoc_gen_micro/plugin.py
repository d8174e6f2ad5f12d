"""protoc-gen-micro: CodeGeneratorRequest on stdin -> CodeGeneratorResponse on stdout.

    protoc --plugin=protoc-gen-micro=$(which protoc-gen-micro) \\
           --python_out=out --micro_out=out greeter/v1/greeter.proto
"""

from __future__ import annotations

import sys

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from protoc_gen_micro import model
from protoc_gen_micro.naming import NamingError
from protoc_gen_micro.render import render

_Response = plugin_pb2.CodeGeneratorResponse


def generate(request: plugin_pb2.CodeGeneratorRequest) -> _Response:
    """The whole plugin without I/O; errors become ``response.error`` for protoc."""
    response = _Response(
        supported_features=_Response.FEATURE_PROTO3_OPTIONAL | _Response.FEATURE_SUPPORTS_EDITIONS,
        minimum_edition=descriptor_pb2.EDITION_PROTO2,
        maximum_edition=descriptor_pb2.EDITION_2024,
    )
    if request.parameter:
        response.error = f"protoc-gen-micro takes no options, got {request.parameter!r}"
        return response
    try:
        files = model.build(request)
    except NamingError as e:
        response.error = str(e)
        return response
    for file in files:
        response.file.add(name=file.output, content=render(file))
    return response


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
