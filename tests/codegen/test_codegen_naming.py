"""The naming rules of protoc_gen_micro/naming.py, without protoc."""

from __future__ import annotations

import ast
import builtins
import itertools
import keyword

import pytest

from protoc_gen_micro import naming
from protoc_gen_micro.model import pb2_module


@pytest.mark.parametrize(
    ("proto", "python"),
    [
        ("SayHello", "say_hello"),
        ("GetHTTPResponse", "get_http_response"),
        ("GetHttpResponse", "get_http_response"),
        ("get_http_response", "get_http_response"),
        ("HTTPServer", "http_server"),
        ("ListV2Items", "list_v2_items"),
        ("Get2FA", "get2_fa"),
        ("OAuth2Token", "o_auth2_token"),
        ("X", "x"),
        ("ABC", "abc"),
        ("already_snake", "already_snake"),
        ("None", "none"),
        ("def", "def"),
    ],
)
def test_snake_case(proto: str, python: str) -> None:
    assert naming.snake_case(proto) == python


@pytest.mark.parametrize("word", keyword.kwlist)
def test_keywords_take_a_trailing_underscore(word: str) -> None:
    assert naming.escape_keyword(word) == word + "_"
    assert naming.allocate(word, set()) == word + "_"


@pytest.mark.parametrize("word", ["range", "type", "print", "float", "match", "case", "self"])
def test_builtins_and_soft_keywords_are_kept(word: str) -> None:
    assert naming.escape_keyword(word) == word
    assert naming.allocate(word, set()) == word


def test_every_allocated_name_is_an_identifier_and_not_a_keyword() -> None:
    taken: set[str] = set()
    names = [
        naming.allocate(naming.snake_case(w), taken) for w in [*keyword.kwlist, *dir(builtins)]
    ]
    assert all(n.isidentifier() and not keyword.iskeyword(n) for n in names)
    assert len(set(names)) == len(names)


def test_collisions_take_underscores_in_declaration_order() -> None:
    taken: set[str] = set()
    wanted = ["get_http_response", "get_http_response", "get_http_response", "def_", "def", "def"]
    assert [naming.allocate(w, taken) for w in wanted] == [
        "get_http_response",
        "get_http_response_",
        "get_http_response__",
        "def_",
        "def__",
        "def___",
    ]
    assert taken == {
        "get_http_response",
        "get_http_response_",
        "get_http_response__",
        "def_",
        "def__",
        "def___",
    }


def test_service_class_names_collide_across_services() -> None:
    taken: set[str] = set()
    first = [naming.allocate("Foo" + s, taken) for s in naming.SERVICE_SUFFIXES]
    second = [naming.allocate("FooSync" + s, taken) for s in naming.SERVICE_SUFFIXES]
    assert first == [
        "FooMethods",
        "FooHandler",
        "FooClient",
        "FooSyncClient",
        "FooCalls",
        "FooSyncCalls",
    ]
    assert second == [
        "FooSyncMethods",
        "FooSyncHandler",
        "FooSyncClient_",
        "FooSyncSyncClient",
        "FooSyncCalls_",
        "FooSyncSyncCalls",
    ]


@pytest.mark.parametrize(
    ("module", "alias"),
    [
        ("greeter.v1.greeter_pb2", "_greeter_dot_v1_dot_greeter__pb2"),
        ("google.protobuf.empty_pb2", "_google_dot_protobuf_dot_empty__pb2"),
        ("corpus_nopackage_pb2", "_corpus__nopackage__pb2"),
        ("a.b_c_pb2", "_a_dot_b__c__pb2"),
        ("a_b.c_pb2", "_a__b_dot_c__pb2"),
    ],
)
def test_module_aliases(module: str, alias: str) -> None:
    assert naming.module_alias(module) == alias


def test_module_aliases_are_private_and_unique() -> None:
    """Distinct modules never share an alias, and aliases start with ``_``, which
    no generated name from a proto name can."""
    parts = ["a", "a_b", "a__b", "b_", "_b", "dot", "_dot_", "dot_b"]
    modules = {".".join(p) + "_pb2" for n in (1, 2, 3) for p in itertools.product(parts, repeat=n)}
    aliases = {naming.module_alias(m) for m in modules}
    assert len(aliases) == len(modules)
    assert all(a.startswith("_") and a.isidentifier() for a in aliases)


@pytest.mark.parametrize(
    ("proto", "module"),
    [
        ("greeter/v1/greeter.proto", "greeter.v1.greeter_pb2"),
        ("corpus/nested/b/v2/my-service.proto", "corpus.nested.b.v2.my_service_pb2"),
        ("root.proto", "root_pb2"),
    ],
)
def test_pb2_module_follows_protoc(proto: str, module: str) -> None:
    assert pb2_module(proto) == module


@pytest.mark.parametrize("name", ["_Hidden", "__init__", "_"])
def test_leading_underscore_is_refused(name: str) -> None:
    with pytest.raises(naming.NamingError, match=r"^x\.proto: service S: a name starting with '_'"):
        naming.check_identifier(name, "x.proto: service S")


@pytest.mark.parametrize("name", ["Hidden_", "a_b", "range", "def"])
def test_other_names_are_accepted(name: str) -> None:
    naming.check_identifier(name, "x.proto: service S")


@pytest.mark.parametrize("attribute", ["def", "Outer.None", "class.Inner", "A.B.lambda"])
def test_messages_named_after_keywords_are_refused(attribute: str) -> None:
    with pytest.raises(naming.NamingError, match="named after a Python keyword"):
        naming.check_message(attribute, "x.proto: service S, method M: message type p.X")


@pytest.mark.parametrize("attribute", ["Def", "Outer.Inner", "match", "type.case"])
def test_other_message_names_are_accepted(attribute: str) -> None:
    naming.check_message(attribute, "x.proto: service S, method M: message type p.X")


def _literal_value(text: str, indent: str) -> str:
    """What ``naming.docstring`` promises the literal evaluates to."""
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    if len(lines) == 1:
        return lines[0]
    rest = "".join("\n" + (indent + line if line else "") for line in lines[1:])
    return f"{lines[0]}{rest}\n{indent}"


def test_docstring_literal_holds_any_quotes_and_backslashes() -> None:
    """Every string of up to five characters over an alphabet of quotes, backslashes,
    newlines and letters becomes a valid literal with exactly that value."""
    alphabet = ['"', "'", "\\", "\n", "a", " "]
    checked = 0
    for size in range(6):
        for chars in itertools.product(alphabet, repeat=size):
            text = "".join(chars)
            literal = naming.docstring(text, "    ")
            assert (literal[:3], literal[-3:]) == ('"""', '"""'), literal
            assert ast.literal_eval(literal) == _literal_value(text, "    "), (text, literal)
            checked += 1
    assert checked == sum(len(alphabet) ** n for n in range(6))


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("plain", '"""plain"""'),
        ('ends with "', '"""ends with \\""""'),
        ('""""""', '"""\\"\\"\\"\\""\\""""'),
        ("back\\slash", '"""back\\\\slash"""'),
        ("two\n  lines", '"""two\n      lines\n    """'),
    ],
)
def test_docstring_examples(text: str, literal: str) -> None:
    assert naming.docstring(text, "    ") == literal
