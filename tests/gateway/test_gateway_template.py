"""Path templates of google.api.http rules, without I/O."""

from __future__ import annotations

import pytest

from micro.gateway.template import Template, TemplateError


@pytest.mark.parametrize(
    ("template", "path", "variables"),
    [
        ("/v1/shelves/{shelf}", "/v1/shelves/a%20b", {"shelf": "a b"}),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2", {"name": "shelves/1/books/2"}),
        ("/v1/{book.id}/x", "/v1/7/x", {"book.id": "7"}),
        ("/files/{path=**}", "/files/a/b%2Fc/d%20e", {"path": "a/b%2Fc/d e"}),  # %2F kept
        ("/v1/{name=*}:publish", "/v1/n:publish", {"name": "n"}),
        ("/v1/*/x", "/v1/anything/x", {}),
    ],
)
def test_a_template_matches_and_binds(template: str, path: str, variables: dict[str, str]) -> None:
    assert Template.parse(template).match(path) == variables


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/shelves/{shelf}", "/v1/shelves/a/b"),  # one segment only
        ("/v1/{name=shelves/*}", "/v1/books/1"),
        ("/v1/{name=*}:publish", "/v1/n"),
        ("/v1/x", "/v1/x/"),
    ],
)
def test_a_template_refuses_what_it_does_not_describe(template: str, path: str) -> None:
    assert Template.parse(template).match(path) is None


def test_a_verb_counts_as_specific_as_a_literal() -> None:
    assert Template.parse("/v1/{name=*}:title").literals > Template.parse("/v1/{name=*}").literals


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("v1/x", "must start with '/'"),
        ("/v1/{x", "expected '}'"),
        ("/a/**/b", "'**' must be the last segment"),
        ("/{a={b}}", "a variable inside a variable"),
        ("/{1a}", "expected a field path"),
        ("/v1//x", "expected a segment"),
    ],
)
def test_a_bad_template_says_where(template: str, says: str) -> None:
    with pytest.raises(TemplateError) as failure:
        Template.parse(template)
    assert str(failure.value).startswith(f"path template {template!r}: ")
    assert says in str(failure.value)
