"""protoc-gen-micro: CodeGeneratorRequest on stdin -> CodeGeneratorResponse on stdout.

    protoc --plugin=protoc-gen-micro=$(which protoc-gen-micro) \\
           --python_out=out --micro_out=out greeter/v1/greeter.proto

Options (``--micro_opt=package=app.gen``, or buf's ``opt:``) are in ``options.py``.
"""

from __future__ import annotations

import sys

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from protoc_gen_micro import model
from protoc_gen_micro.naming import NamingError
from protoc_gen_micro.options import Options, OptionsError
from protoc_gen_micro.render import render

_Response = plugin_pb2.CodeGeneratorResponse


def generate(request: plugin_pb2.CodeGeneratorRequest) -> _Response:
    """The whole plugin without I/O; errors become ``response.error`` for protoc."""
    response = _Response(
        supported_features=_Response.FEATURE_PROTO3_OPTIONAL | _Response.FEATURE_SUPPORTS_EDITIONS,
        minimum_edition=descriptor_pb2.EDITION_PROTO2,
        maximum_edition=descriptor_pb2.EDITION_2024,
    )
    try:
        files = model.build(request, Options.parse(request.parameter))
    except (NamingError, OptionsError) as e:
        response.error = str(e)
        return response
    for file in files:
        response.file.add(name=file.output, content=render(file))
    return response


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
