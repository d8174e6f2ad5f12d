"""/docs in a real browser (headless Chromium): it renders every route from
openapi.json with assets the gateway itself serves, and its form calls a method."""

from __future__ import annotations

import json
import re

import browser
import httpx
import pytest
from gateway_support import Stack

pytestmark = [
    pytest.mark.backend,
    pytest.mark.skipif(browser.CHROMIUM is None, reason="no chromium (make backends)"),
]

# The page sets data-ready once it has rendered openapi.json: polled in the page.
READY = """new Promise(ready => {
    const poll = setInterval(() => {
        if (document.body.dataset.ready) { clearInterval(poll); ready(true); }
    }, 20);
})"""


def test_the_page_needs_nothing_from_outside(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert linked == ["docs/assets/docs.css", "openapi.json", "docs/assets/docs.js"]
    for asset in linked:
        assert http.get(f"/{asset}").status_code == 200


def test_the_page_lists_every_route_and_calls_a_method(stack: Stack) -> None:
    with browser.page(f"{stack.url}/docs") as page:
        assert page.evaluate(READY) is True
        sections = page.evaluate(
            "[...document.querySelectorAll('section h2')].map(h => h.textContent)"
        )
        assert "POST/library/Library/GetBook" in sections
        assert "GET/v1/shelves/{shelf}/books" in sections
        deprecated = page.evaluate(
            "document.getElementById('library.library.v1.Library.Old').className"
        )
        assert deprecated == "deprecated"
        answer = page.evaluate(SEND % ("library.library.v1.Library.GetBook", _json(GET)))
        assert answer == '200 {"id":"9","title":"Title of shelves/1/books/9"}'
        listed = page.evaluate(SEND % ("library.library.v1.Library.ListBooks.1", _json(LISTING)))
        asked = json.loads(listed.removeprefix("200 "))["asked"]
        assert asked == "shelf=s 1 page_size=3 tags=a,b include_hidden=False"
        created = page.evaluate(SEND % ("library.library.v1.Library.CreateBook.1", _json(BOOK)))
        assert json.loads(created.removeprefix("200 ")) == {"title": "T", "tags": ["shelf:s1"]}


# The form of one section filled with a JSON request and sent: what it shows.
SEND = """(async () => {
    const part = document.getElementById('%s');
    part.querySelector('textarea').value = %s;
    part.querySelector('button').click();
    const shown = part.querySelector('pre');
    while (!shown.dataset.status) await new Promise(r => setTimeout(r, 20));
    return shown.textContent;
})()"""
GET = {"name": "shelves/1/books/9"}  # the whole body of the default POST route
LISTING = {"shelf": "s 1", "pageSize": 3, "tags": ["a", "b"]}  # path, then query
BOOK = {"shelf": "s1", "title": "T"}  # the path's shelf; the rest is the body (a Book)


def _json(data: object) -> str:
    return json.dumps(json.dumps(data))  # a JavaScript string literal of the JSON
