"""What travels with a call: headers as metadata, deadlines; streams as NDJSON, SSE
and WebSocket messages."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway_support import Stack
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

WAIT = 60.0  # seconds a WebSocket answer may take on a loaded machine


def test_x_headers_and_authorization_reach_the_service_and_nothing_else(
    http: httpx.Client,
) -> None:
    sent = {"x-user": "ada", "authorization": "Bearer t0ken", "cookie": "secret=1"}
    answer = http.get("/v1/whoami", headers=sent)
    assert answer.status_code == 200, answer.text
    seen = answer.json()["metadata"]
    assert seen["x-user"] == "ada"
    assert seen["authorization"] == "Bearer t0ken"
    assert "cookie" not in seen


@pytest.mark.parametrize(
    ("header", "value", "seconds"),
    [
        ("x-request-timeout", "30", 30.0),
        ("grpc-timeout", "30S", 30.0),
        ("grpc-timeout", "30000m", 30.0),
    ],
)
def test_a_deadline_comes_from_the_timeout_headers(
    http: httpx.Client, header: str, value: str, seconds: float
) -> None:
    answer = http.get("/v1/whoami", headers={header: value})
    left = answer.json()["deadline"]
    # What the service sees is the deadline less the time on the way there (and
    # grpc's rounding up to its timer granularity): a little under the given, never 0.
    assert 0 < left <= seconds + 0.1
    assert left > seconds / 2
    assert "timeout" not in json.dumps(answer.json()["metadata"])


@pytest.mark.parametrize(
    ("header", "value"),
    [("x-request-timeout", "soon"), ("x-request-timeout", "-1"), ("grpc-timeout", "5 s")],
)
def test_a_bad_timeout_header_is_400_naming_it(http: httpx.Client, header: str, value: str) -> None:
    answer = http.get("/v1/whoami", headers={header: value})
    assert answer.status_code == 400
    assert answer.json()["message"].startswith(f"{header} {value!r}")


def test_response_headers_and_trailers_of_a_success_come_back_as_headers(
    http: httpx.Client,
) -> None:
    answer = http.post("/library/Library/GetBook", json={"name": "shelves/1/books/2"})
    assert answer.status_code == 200
    assert answer.headers["x-shelf"] == "fiction"  # sent before the reply
    assert answer.headers["x-served-by"] == "library"  # sent with the status
    assert "grpc-internal" not in answer.headers  # gRPC's own keys stay gRPC's


@pytest.mark.parametrize(("count", "trailers"), [(2, False), (0, True)])
def test_a_server_streams_headers_come_back_as_headers(
    http: httpx.Client, count: int, trailers: bool
) -> None:
    """Its trailers too when there is no reply; after the first, the body has begun."""
    answer = http.post("/library/Library/Print", json={"count": count})
    assert answer.status_code == 200
    assert len(answer.text.splitlines()) == count
    assert answer.headers["x-press"] == "p1"
    assert answer.headers.get("x-printed") == (str(count) if trailers else None)


def test_a_server_stream_is_ndjson_by_default(http: httpx.Client) -> None:
    answer = http.post("/library/Library/Print", json={"count": 3})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in answer.text.splitlines()] == [
        {"id": "1"},
        {"id": "2"},
        {"id": "3"},
    ]


def test_a_server_stream_is_server_sent_events_when_accepted(http: httpx.Client) -> None:
    answer = http.post(
        "/library/Library/Print", json={"count": 2}, headers={"accept": "text/event-stream"}
    )
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.text == 'data: {"id":"1"}\n\ndata: {"id":"2"}\n\n'


@pytest.mark.parametrize("accept", ["application/x-ndjson", "text/event-stream"])
def test_a_stream_failing_midway_ends_with_its_status(
    stack: Stack, http: httpx.Client, accept: str
) -> None:
    stack.run(_clear(stack))
    request = {"count": 5, "failAfter": 1}
    with http.stream(
        "POST", "/library/Library/Print", json=request, headers={"accept": accept}
    ) as answer:
        assert answer.status_code == 200  # the first book came before the failure
        lines = answer.iter_lines()
        first = next(lines)
        assert '{"id":"1"}' in first
        stack.library.printing.set()  # the press breaks only once the first book is read
        rest = "\n".join(lines)
    error = {"code": 10, "message": "the press broke at book 2"}
    if accept == "text/event-stream":
        assert rest.strip() == "event: error\ndata: " + json.dumps(error, separators=(",", ":"))
    else:
        assert json.loads(rest) == {"error": error}


async def _clear(stack: Stack) -> None:
    stack.library.printing.clear()


def test_a_stream_failing_at_once_gets_its_http_status(http: httpx.Client) -> None:
    answer = http.post("/library/Library/Print", json={"count": "x"})
    assert answer.status_code == 400


def _ws(stack: Stack, path: str) -> str:
    return stack.url.replace("http://", "ws://") + path


def test_a_client_stream_over_a_websocket(stack: Stack) -> None:
    with connect(_ws(stack, "/library/Library/Collect"), open_timeout=WAIT) as ws:
        ws.send(json.dumps({"id": "1"}))
        ws.send(json.dumps({"id": "2"}))
        ws.send("")  # no more requests
        assert json.loads(ws.recv(WAIT)) == {"books": [{"id": "1"}, {"id": "2"}]}
        with pytest.raises(ConnectionClosed):
            ws.recv(WAIT)
        assert ws.close_code == 1000


def test_a_bidi_stream_over_a_websocket_answers_as_it_goes(stack: Stack) -> None:
    with connect(_ws(stack, "/library/Library/Shout"), open_timeout=WAIT) as ws:
        for book in ("a", "b"):
            ws.send(json.dumps({"id": book, "title": book}))
            assert json.loads(ws.recv(WAIT)) == {"id": book, "title": book.upper()}
        ws.send("")
        with pytest.raises(ConnectionClosed):
            ws.recv(WAIT)
        assert ws.close_code == 1000


def test_bad_input_on_a_websocket_ends_it_naming_the_message(stack: Stack) -> None:
    with connect(_ws(stack, "/library/Library/Shout"), open_timeout=WAIT) as ws:
        ws.send(json.dumps({"id": "1"}))
        ws.recv(WAIT)
        ws.send(json.dumps({"id": 1, "pages": "many"}))
        error = json.loads(ws.recv(WAIT))["error"]
        assert error["code"] == 3
        assert error["message"].startswith("WebSocket message 2 does not fit library.v1.Book")
        with pytest.raises(ConnectionClosed):
            ws.recv(WAIT)
        assert ws.close_code == 1008


def test_an_unknown_method_on_a_websocket_is_not_found(stack: Stack) -> None:
    with connect(_ws(stack, "/library/Library/Nope"), open_timeout=WAIT) as ws:
        assert json.loads(ws.recv(WAIT))["error"]["code"] == 5
