"""gRPC statuses as HTTP answers: the status code google.rpc.Code documents for each,
and the body as ``google.rpc.Status`` in proto3 JSON, details included."""

from __future__ import annotations

import base64
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.descriptor_pool import DescriptorPool

from micro import errors

Code = grpc.StatusCode

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
}


def body(error: errors.Error, pool: DescriptorPool | None = None) -> dict[str, Any]:
    """``error`` as google.rpc.Status JSON. A detail whose type neither this process
    nor ``pool`` (the service's reflection) knows keeps its bytes, base64 encoded."""
    status: dict[str, Any] = {"code": error.code.value[0], "message": error.message}
    if error.details:
        status["details"] = [_detail(d, pool) for d in error.details]
    return status


def _detail(packed: AnyMessage, pool: DescriptorPool | None) -> dict[str, Any]:
    for where in (None, pool) if pool is not None else (None,):
        try:
            shown: dict[str, Any] = json_format.MessageToDict(packed, descriptor_pool=where)
            return shown
        except (TypeError, KeyError):  # json_format: the type URL names an unknown type
            continue
    return {"@type": packed.type_url, "value": base64.b64encode(packed.value).decode()}
