"""Failures as HTTP: gRPC statuses under their HTTP status with google.rpc.Status
bodies, bad input as 400 naming the field, limits, no traceback anywhere."""

from __future__ import annotations

import socket

import httpx
import pytest
from gateway_support import Stack

from micro.registry import Node, Service

STATUSES = [
    ("INVALID_ARGUMENT", 3, 400),
    ("NOT_FOUND", 5, 404),
    ("ALREADY_EXISTS", 6, 409),
    ("PERMISSION_DENIED", 7, 403),
    ("UNAUTHENTICATED", 16, 401),
    ("RESOURCE_EXHAUSTED", 8, 429),
    ("FAILED_PRECONDITION", 9, 400),
    ("UNIMPLEMENTED", 12, 501),
    ("INTERNAL", 13, 500),
    ("DATA_LOSS", 15, 500),
]


@pytest.mark.parametrize(("name", "code", "http_status"), STATUSES)
def test_a_status_maps_to_its_http_status_with_details(
    http: httpx.Client, name: str, code: int, http_status: int
) -> None:
    answer = http.post("/library/Library/Fail", json={"code": name, "message": "asked to"})
    assert answer.status_code == http_status
    assert answer.json() == {
        "code": code,
        "message": "asked to",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ASKED",
                "domain": "library.test",
            }
        ],
    }


def test_response_headers_and_trailers_of_a_failure_come_back_as_headers(
    http: httpx.Client,
) -> None:
    answer = http.post("/library/Library/Fail", json={"code": "ABORTED", "message": "m"})
    assert answer.status_code == 409
    assert answer.headers["x-shelf"] == "fiction"
    assert answer.headers["x-failed-by"] == "library"
    assert "grpc-internal" not in answer.headers


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{bad", "malformed JSON in the request body"),
        (b'{"nmae": "x"}', 'has no field named "nmae"'),
        (b'{"name": 5}', "name"),
        (b"[1]", "expected a JSON object"),
    ],
)
def test_bad_json_is_400_naming_what_is_wrong(http: httpx.Client, body: bytes, says: str) -> None:
    answer = http.post("/library/Library/GetBook", content=body)
    assert answer.status_code == 400
    assert answer.json()["code"] == 3
    assert says in answer.json()["message"]
    assert "Traceback" not in answer.text


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v1/shelves/s1/books?pageSize=many", "Failed to parse pageSize field"),
        ("/v1/shelves/s1/books?include_hidden=yes", "include_hidden is a bool"),
        ("/v1/shelves/s1/books?colour=red", "query parameter 'colour'"),
        ("/v1/shelves/s1/books?shelf.x=1", "library.v1.ListBooksRequest.shelf is not a message"),
    ],
)
def test_bad_query_parameters_are_400_naming_the_field(
    http: httpx.Client, path: str, says: str
) -> None:
    answer = http.get(path)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["message"]


def test_a_body_over_the_limit_is_413_before_it_is_read(http: httpx.Client) -> None:
    big = b'{"name": "' + b"x" * (64 * 1024) + b'"}'
    answer = http.post("/library/Library/GetBook", content=big)
    assert answer.status_code == 413
    assert answer.json()["message"] == "the request body is larger than 65536 bytes"


def test_a_body_over_the_limit_without_a_length_is_413_too(http: httpx.Client) -> None:
    chunks = iter([b'{"name": "', b"x" * (40 * 1024), b"x" * (40 * 1024), b'"}'])
    answer = http.post("/library/Library/GetBook", content=chunks)  # chunked: no length
    assert answer.status_code == 413


def test_a_client_stream_over_plain_http_says_to_use_a_websocket(http: httpx.Client) -> None:
    answer = http.post("/library/Library/Collect", json={})
    assert answer.status_code == 400
    assert answer.json()["message"] == (
        "library.v1.Library/Collect is client streaming: call it over a WebSocket"
    )


def test_a_service_whose_nodes_do_not_answer_is_503_naming_the_node(
    stack: Stack, http: httpx.Client
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        ghost = Service(name="ghost", nodes=(Node("ghost-1", address),))
        stack.run(stack.registry.register(ghost, ttl=60))
        try:
            answer = http.post("/ghost/Ghost/Boo", json={})
        finally:
            stack.run(stack.registry.deregister(ghost))
    assert answer.status_code == 503
    assert answer.json()["code"] == 14
    assert answer.json()["message"].startswith(f"reflection of {address} failed: UNAVAILABLE")
    assert "Traceback" not in answer.text
