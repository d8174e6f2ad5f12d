"""/openapi.json: OpenAPI 3.1 built from the descriptors the services' reflection gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from micro.gateway import comments
from micro.gateway.comments import DescriptorSetError


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


def test_proto_comments_from_a_descriptor_set_are_the_descriptions(spec: Any) -> None:
    get = spec["paths"]["/library/Library/GetBook"]["post"]
    assert get["description"] == "One book by its resource name."
    printing = spec["components"]["schemas"]["library.v1.PrintRequest"]["properties"]
    assert (
        printing["failAfter"]["description"]
        == "Fail with ABORTED after this many books (0: never)."
    )
    collect = spec["paths"]["/library/Library/Collect"]["post"]["description"]
    assert collect.startswith("Shelves every book sent.\n\nClient streaming: open a WebSocket")


def test_a_descriptor_set_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    garbage = tmp_path / "api.binpb"
    garbage.write_text("not protobuf")
    with pytest.raises(DescriptorSetError) as failure:
        comments.load([garbage])
    assert str(failure.value) == (
        f"descriptor set {garbage}: not a FileDescriptorSet (protoc --descriptor_set_out)"
    )
    with pytest.raises(DescriptorSetError, match=r"descriptor set .*missing\.binpb: No such file"):
        comments.load([tmp_path / "missing.binpb"])
