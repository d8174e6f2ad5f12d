"""How proto names become Python names: the one place that decides it.

The rule, in order:

1. Methods become ``snake_case`` (``GetHTTPResponse`` -> ``get_http_response``);
   services keep their proto name and take a suffix (``Greeter`` -> ``GreeterHandler``,
   ``GreeterClient``, ``GreeterSyncClient``, ``GreeterMethods``, ``GreeterCalls``,
   ``GreeterSyncCalls``).
2. A name that is a Python keyword gets a trailing ``_`` (``def_``). Builtins are
   left alone (a method may be called ``range``): generated code spells builtins as
   ``_builtins.float`` so a method name never shadows them.
3. A name already taken in its scope (a method that collides after case conversion,
   a class name another service produced) gets ``_`` appended until it is free; the
   first declared keeps the plain name, so output is stable.
4. Imported modules are bound to ``_``-prefixed aliases, and proto names cannot start
   with ``_`` here, so generated names never shadow what the module uses.

A proto name starting with ``_`` cannot be made safe (Python gives leading underscores
meaning: private names, name mangling, dunder protocols) and is refused. So is a
request or response message named after a Python keyword (``message None``): protobuf's
Python class for it can only be reached with ``getattr``, and stub generators disagree
on how to spell its type.
"""

from __future__ import annotations

import keyword
import re

SERVICE_SUFFIXES = ("Methods", "Handler", "Client", "SyncClient", "Calls", "SyncCalls")

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_LITERAL_END = re.compile(r'"(?=""|\Z)')


class NamingError(ValueError):
    """A proto name that has no safe Python spelling."""


def snake_case(name: str) -> str:
    """``SayHello`` -> ``say_hello``; ``GetHTTPResponse`` -> ``get_http_response``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def check_identifier(name: str, what: str) -> None:
    """Refuse names Python reserves (see the module docstring, rule 4)."""
    if name.startswith("_"):
        raise NamingError(f"{what}: a name starting with '_' is reserved in Python; rename it")


def check_message(attribute: str, what: str) -> None:
    """Refuse a message class Python cannot spell (``_pb2.def``, ``_pb2.Outer.None``)."""
    if any(keyword.iskeyword(part) for part in attribute.split(".")):
        raise NamingError(
            f"{what} is named after a Python keyword, so Python code cannot refer to "
            "its class by name; rename the message"
        )


def escape_keyword(name: str) -> str:
    return name + "_" if keyword.iskeyword(name) else name


def allocate(wanted: str, taken: set[str]) -> str:
    """Return ``wanted`` or the first free ``wanted_``, ``wanted__``…, and take it."""
    name = escape_keyword(wanted)
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def module_alias(module: str) -> str:
    """Alias for an imported module, unique per module path (protoc's own escaping)."""
    return "_" + module.replace("_", "__").replace(".", "_dot_")


def docstring(text: str, indent: str) -> str:
    """A triple-quoted literal whose value is ``text`` (lines right-stripped), whatever
    quotes and backslashes it holds."""
    body = "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))
    # Escape backslashes, then each quote that would end the literal early: one that
    # starts a run of three, and a last one (it would run into the closing quotes).
    body = _LITERAL_END.sub(r'\\"', body.replace("\\", "\\\\"))
    lines = body.split("\n")
    if len(lines) == 1:
        return f'"""{lines[0]}"""'
    joined = "\n".join(indent + line if line else "" for line in lines[1:])
    return f'"""{lines[0]}\n{joined}\n{indent}"""'
