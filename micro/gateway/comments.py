"""The .proto comments of services, methods, messages and fields, by full name, from
descriptor sets built with source info: reflection serves descriptors without them
(Python's generated code drops them), so OpenAPI descriptions need a set.

    buf build -o api.binpb                      # or: python -m grpc_tools.protoc
    micro api --descriptor-set api.binpb        #   --include_source_info
                                                #   --descriptor_set_out=api.binpb ...
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

SERVICE, METHOD, MESSAGE, FIELD, NESTED = 6, 2, 4, 2, 3  # FileDescriptorProto field numbers


class DescriptorSetError(ValueError):
    """A descriptor set file that cannot be read; the message names it."""


def load(paths: Sequence[str | Path]) -> dict[str, str]:
    """The comments in the descriptor sets at ``paths``, by element full name."""
    found: dict[str, str] = {}
    for path in paths:
        try:
            files = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes()).file
        except OSError as e:
            raise DescriptorSetError(f"descriptor set {path}: {e.strerror}") from None
        except DecodeError:
            raise DescriptorSetError(
                f"descriptor set {path}: not a FileDescriptorSet (protoc --descriptor_set_out)"
            ) from None
        found.update(comments(files))
    return found


def comments(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    found: dict[str, str] = {}
    for file in files:
        found.update(_of_file(file))
    return found


def _of_file(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    text = {
        tuple(location.path): textwrap.dedent(said).strip()
        for location in file.source_code_info.location
        if (said := location.leading_comments or location.trailing_comments).strip()
    }
    found: dict[str, str] = {}
    scope = f"{file.package}." if file.package else ""

    def add(path: tuple[int, ...], name: str) -> None:
        if path in text:
            found[name] = text[path]

    def messages(
        path: tuple[int, ...], protos: Iterable[descriptor_pb2.DescriptorProto], prefix: str
    ) -> None:
        for i, message in enumerate(protos):
            where, name = (*path, i), prefix + message.name
            add(where, name)
            for f, field in enumerate(message.field):
                add((*where, FIELD, f), f"{name}.{field.name}")
            messages((*where, NESTED), message.nested_type, f"{name}.")

    for s, service in enumerate(file.service):
        for m, method in enumerate(service.method):
            add((SERVICE, s, METHOD, m), f"{scope}{service.name}.{method.name}")
    messages((MESSAGE,), file.message_type, scope)
    return found
