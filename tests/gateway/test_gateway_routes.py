"""Requests in, replies out: the default POST route and the google.api.http routes
(path variables, body, query parameters, response_body, additional_bindings)."""

from __future__ import annotations

import httpx
from gateway_support import Stack

from micro.registry import Node, Service


def test_every_method_answers_a_post_to_service_service_method(http: httpx.Client) -> None:
    answer = http.post("/library/Library/GetBook", json={"name": "shelves/1/books/2"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"id": "2", "title": "Title of shelves/1/books/2"}


def test_the_full_proto_service_name_works_too(http: httpx.Client) -> None:
    answer = http.post("/library/library.v1.Library/GetBook", json={"name": "n"})
    assert answer.json()["title"] == "Title of n"


def test_a_path_template_binds_a_multi_segment_variable(http: httpx.Client) -> None:
    answer = http.get("/v1/shelves/s%201/books/b2")
    assert answer.status_code == 200, answer.text
    assert answer.json()["title"] == "Title of shelves/s 1/books/b2"  # percent-decoded


def test_query_parameters_fill_the_rest_repeated_and_typed(http: httpx.Client) -> None:
    answer = http.get(
        "/v1/shelves/s1/books",
        params=[("pageSize", "3"), ("tags", "a"), ("tags", "b"), ("include_hidden", "true")],
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["asked"] == "shelf=s1 page_size=3 tags=a,b include_hidden=True"
    assert answer.json()["books"] == [{"id": "1", "pages": "1099511627776"}]  # int64: text


def test_body_names_the_field_the_json_fills(http: httpx.Client) -> None:
    answer = http.post("/v1/shelves/s1/books", json={"title": "T", "pages": 12})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"title": "T", "pages": "12", "tags": ["shelf:s1"]}


def test_an_additional_binding_is_a_route_of_its_own(http: httpx.Client) -> None:
    answer = http.put("/v1/shelves/s1/books/b7", json={"title": "T"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": "b7", "title": "T", "tags": ["shelf:s1"]}


def test_a_verb_route_is_preferred_and_response_body_sends_one_field(
    http: httpx.Client,
) -> None:
    answer = http.get("/v1/shelves/1/books/2:title")
    assert answer.status_code == 200, answer.text
    assert answer.json() == "Title of shelves/1/books/2"


def test_unknown_routes_services_and_methods_are_404(http: httpx.Client) -> None:
    for path, says in [
        ("/nosuch/Library/GetBook", "no service 'nosuch' in the registry"),
        ("/library/Library/Nope", "service 'library' has no method Library/Nope"),
        ("/library/Shelf/GetBook", "service 'library' has no method Shelf/GetBook"),
    ]:
        answer = http.post(path, json={})
        assert answer.status_code == 404
        assert answer.json() == {"code": 5, "message": says}
    answer = http.get("/v2/nothing/here")
    assert answer.status_code == 404
    assert answer.json()["message"] == "no route for GET /v2/nothing/here"


def test_descriptors_are_read_once_per_version(stack: Stack, http: httpx.Client) -> None:
    http.post("/library/Library/GetBook", json={})
    first = stack.run(stack.gateway.catalog.api("library"))
    http.post("/library/Library/GetBook", json={})
    assert stack.run(stack.gateway.catalog.api("library")) is first
    assert first is not None
    assert first.version == ""  # the node's version; calls are not pinned to the only one
    assert {op.version for op in first.operations} == {None}


def test_calls_stay_on_the_described_version_once_another_is_registered(
    stack: Stack, http: httpx.Client
) -> None:
    node = stack.service.record.nodes[0]
    other = Service(name="library", version="2", nodes=(Node("library-v2", node.address),))
    stack.run(stack.registry.register(other, ttl=60))
    stack.run(stack.client.registry.refresh("library"))  # in the client's cache now, not
    try:  # whenever its watch hears of it
        assert http.get("/v1/shelves/1/books/2").status_code == 200
        api = stack.run(stack.gateway.catalog.api("library"))
        assert api is not None
        assert api.pinned
        assert {op.version for op in api.operations} == {""}  # the version reflected
    finally:
        stack.run(stack.registry.deregister(other))
        stack.run(stack.client.registry.refresh("library"))
