"""/openapi.json: OpenAPI 3.1 built from the descriptors the services' reflection gives."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.fixture(scope="module")
def spec(http: httpx.Client) -> Any:
    answer = http.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def test_it_is_openapi_3_1_with_every_method_and_route(spec: Any) -> None:
    assert spec["openapi"] == "3.1.0"
    methods = ["GetBook", "ListBooks", "CreateBook", "GetTitle", "Fail", "Whoami"]
    methods += ["Print", "Collect", "Shout", "Old"]
    for method in methods:
        assert "post" in spec["paths"][f"/library/Library/{method}"]
    assert set(spec["paths"]["/v1/{name}"]) == {"get"}
    assert set(spec["paths"]["/v1/shelves/{shelf}/books"]) == {"get", "post"}
    assert set(spec["paths"]["/v1/shelves/{shelf}/books/{book.id}"]) == {"put"}


def test_parameters_come_from_the_path_and_the_rest_of_the_request(spec: Any) -> None:
    listing = spec["paths"]["/v1/shelves/{shelf}/books"]["get"]
    where = {p["name"]: p["in"] for p in listing["parameters"]}
    assert where == {
        "shelf": "path",
        "page_size": "query",
        "tags": "query",
        "include_hidden": "query",
    }
    kinds = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert kinds["tags"] == {"type": "array", "items": {"type": "string"}}
    assert kinds["include_hidden"] == {"type": "boolean"}
    assert "requestBody" not in listing


def test_body_field_and_schemas_follow_proto3_json(spec: Any) -> None:
    create = spec["paths"]["/v1/shelves/{shelf}/books"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/library.v1.Book"}
    book = spec["components"]["schemas"]["library.v1.Book"]["properties"]
    assert book["pages"] == {"type": "string", "format": "int64"}
    caller = spec["components"]["schemas"]["library.v1.Caller"]["properties"]
    assert caller["metadata"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert "pageSize" in spec["components"]["schemas"]["library.v1.ListBooksRequest"]["properties"]


def test_streams_errors_and_deprecation_are_described(spec: Any) -> None:
    printing = spec["paths"]["/library/Library/Print"]["post"]["responses"]["200"]["content"]
    assert set(printing) == {"application/x-ndjson", "text/event-stream"}
    collect = spec["paths"]["/library/Library/Collect"]["post"]
    assert "WebSocket" in collect["description"]
    errors = spec["paths"]["/library/Library/GetBook"]["post"]["responses"]["default"]
    status = errors["content"]["application/json"]["schema"]["$ref"]
    assert status == "#/components/schemas/google.rpc.Status"
    assert spec["paths"]["/library/Library/Old"]["post"]["deprecated"] is True
    assert "deprecated" not in spec["paths"]["/library/Library/GetBook"]["post"]
