"""HTTP path templates of ``google.api.http`` rules: parsed once, matched per request.

    Template = "/" Segments [ ":" Verb ]
    Segment  = "*" | "**" | LITERAL | "{" FieldPath [ "=" Segments ] "}"

``{name}`` is ``{name=*}``: one segment. ``**`` matches the rest of the path, slashes
included, and must come last. A variable's value is percent-decoded, except that a
multi-segment one keeps ``%2F`` as it is, as the transcoding rules say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_KEEP_SLASH = re.compile(r"%(2[Ff])")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateError(ValueError):
    """A path template that does not follow the grammar; the message says where."""


@dataclass(frozen=True)
class Template:
    """A parsed template: ``match`` gives the variables of a path it matches."""

    text: str
    pattern: re.Pattern[str]
    variables: tuple[tuple[str, bool], ...]  # field path, whether it spans segments
    literals: int  # literal segments: the more, the more specific

    @classmethod
    def parse(cls, text: str) -> Template:
        if not text.startswith("/"):
            raise TemplateError(f"path template {text!r}: must start with '/'")
        body, verb = _verb(text[1:])
        parser = _Parser(text, body)
        regex = parser.segments(top=True)
        if parser.rest:
            raise TemplateError(f"path template {text!r}: unexpected {parser.rest!r}")
        if verb:  # a verb is as specific as a literal segment
            regex += ":" + re.escape(verb)
        literals = parser.literals + bool(verb)
        return cls(text, re.compile("/" + regex), tuple(parser.variables), literals)

    def match(self, path: str) -> dict[str, str] | None:
        """The variables of ``path`` (still percent-encoded as received), or None."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        values = {}
        for i, (field, multi) in enumerate(self.variables):
            raw = found.group(f"v{i}")
            # %2F in a multi-segment variable stays encoded: it was not a separator.
            values[field] = unquote(_KEEP_SLASH.sub(r"%25\1", raw) if multi else raw)
        return values

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(field for field, _ in self.variables)


def _verb(text: str) -> tuple[str, str]:
    """``text`` split at the ``:`` of a verb: one outside braces, after every '/'."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == ":" and depth == 0 and "/" not in text[i:]:
            return text[:i], text[i + 1 :]
    return text, ""


class _Parser:
    def __init__(self, whole: str, text: str) -> None:
        self.whole = whole
        self.rest = text
        self.variables: list[tuple[str, bool]] = []
        self.literals = 0

    def _fail(self, what: str) -> TemplateError:
        return TemplateError(f"path template {self.whole!r}: {what} at {self.rest!r}")

    def segments(self, top: bool) -> str:
        parts = [self.segment(top)]
        while self.rest.startswith("/"):
            if parts[-1].endswith(".*"):
                raise self._fail("'**' must be the last segment")
            self.rest = self.rest[1:]
            parts.append(self.segment(top))
        return "/".join(parts)

    def segment(self, top: bool) -> str:
        if self.rest.startswith("**"):
            self.rest = self.rest[2:]
            return ".*"
        if self.rest.startswith("*"):
            self.rest = self.rest[1:]
            return "[^/]+"
        if self.rest.startswith("{"):
            if not top:
                raise self._fail("a variable inside a variable")
            return self.variable()
        literal = re.match(r"[^/{}*:]+", self.rest)
        if literal is None:
            raise self._fail("expected a segment")
        self.rest = self.rest[literal.end() :]
        self.literals += 1
        return re.escape(literal[0])

    def variable(self) -> str:
        field = _FIELD.match(self.rest, 1)
        if field is None:
            raise self._fail("expected a field path after '{'")
        self.rest = self.rest[field.end() :]
        inner = "[^/]+"
        if self.rest.startswith("="):
            self.rest = self.rest[1:]
            inner = self.segments(top=False)
        if not self.rest.startswith("}"):
            raise self._fail("expected '}'")
        self.rest = self.rest[1:]
        name = f"v{len(self.variables)}"
        self.variables.append((field[0], "/" in inner or ".*" in inner))
        return f"(?P<{name}>{inner})"
