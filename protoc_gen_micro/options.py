"""The plugin's options: ``--micro_opt=package=myapp.gen`` (protoc) or ``opt:`` (buf).

protoc hands a plugin one string; it is parsed here, once, into ``Options``: comma
separated ``key=value`` items, every key known, every value checked.
"""

from __future__ import annotations

import dataclasses
import keyword
from dataclasses import dataclass


class OptionsError(ValueError):
    """A bad plugin option; the message names it and what is accepted."""


@dataclass(frozen=True)
class Options:
    """``package``: the output directory is the importable package of this dotted name,
    so a ``_micro.py`` imports the modules generated with it relatively (as
    ``micro gen --package`` does); modules from elsewhere (well-known types, installed
    packages) stay absolute."""

    package: str | None = None

    def __post_init__(self) -> None:
        if self.package is not None and not all(
            p.isidentifier() and not keyword.iskeyword(p) for p in self.package.split(".")
        ):
            raise OptionsError(f"package={self.package}: not a dotted Python module name")

    @classmethod
    def parse(cls, parameter: str) -> Options:
        known = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, str] = {}
        for item in (i.strip() for i in parameter.split(",")):
            if not item:
                continue
            key, _, value = item.partition("=")
            if key not in known:
                raise OptionsError(
                    f"unknown option {item!r}: protoc-gen-micro takes {', '.join(known)}=…"
                )
            if not value:
                raise OptionsError(f"option {key} needs a value: {key}=…")
            if key in values:
                raise OptionsError(f"option {key} given twice")
            values[key] = value
        return cls(**values)
