"""Rendering the view model through the jinja2 templates."""

from __future__ import annotations

import functools

import jinja2

from protoc_gen_micro import naming
from protoc_gen_micro.model import File
from protoc_gen_micro.resources import templates_dir


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pyrepr"] = repr
    env.filters["docstring"] = lambda text, indent: naming.docstring(text, " " * indent)
    return env


def render(file: File) -> str:
    return _environment().get_template("micro_module.py.j2").render(file=file)
