"""``micro new NAME``: a service project from ``templates/new``.

``templates/new/common`` holds what every project has (Makefile, README, Dockerfile
and .dockerignore, Kubernetes manifest, pyproject, .gitignore);
``templates/new/<template>`` adds the proto, handler, entry point and tests.
``__pkg__`` in a path becomes the Python package name, ``__dot__`` a leading dot;
files ending in ``.j2`` are rendered with jinja2 and lose the suffix.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import jinja2

from micro.cli.common import CliError
from protoc_gen_micro.resources import templates_dir

TEMPLATES = ("default", "pubsub")
NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")

EXAMPLES = """\
examples:
  micro new shop                        ./shop: a unary + streaming service
  micro new notify --template pubsub    publishes and subscribes a typed event
  micro new shop --dir ~/src && cd ~/src/shop && make test
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "new",
        help="scaffold a service project",
        description="Create NAME/: proto, handler, entry point, tests, Makefile "
        "(make gen, make test, make run), README, Dockerfile and Kubernetes manifest.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="service name: lower case, digits, - or _")
    parser.add_argument("--dir", default=".", help="parent directory (default: .)")
    parser.add_argument("--template", choices=TEMPLATES, default="default")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    written = scaffold(args.name, Path(args.dir), args.template)
    root = Path(args.dir) / args.name
    print(f"micro new: wrote {len(written)} files to {root}")
    print(f"next: cd {root} && make test && make run")
    return 0


def names(name: str) -> dict[str, str]:
    """What templates call the project: ``user-api`` → package ``user_api``, proto
    package ``user_api.v1``, proto service ``UserApi``."""
    if not NAME.fullmatch(name):
        raise CliError(f"service name {name!r}: {_what_is_wrong(name)}")
    pkg = name.replace("-", "_")
    return {
        "name": name,
        "pkg": pkg,
        "proto_package": f"{pkg}.v1",
        "service": "".join(part.capitalize() for part in pkg.split("_")),
        "topic": f"{name}.events",
        "micro_grpc": micro_grpc_requirement(),
    }


def _what_is_wrong(name: str) -> str:
    """Why ``name`` is not a ``NAME``, in the user's terms."""
    if not ("a" <= name[:1] <= "z"):
        return "must start with a lower-case letter"
    bad = sorted({c for c in name if not ("a" <= c <= "z" or c.isdecimal() or c in "-_")})
    if bad:
        return f"{', '.join(map(repr, bad))} not allowed: use lower-case letters, digits, - and _"
    return "words are joined by one - or _, and it cannot end with one"


def micro_grpc_requirement() -> str:
    """What ``pip install`` needs to get this very micro-grpc, as the scaffold's
    Makefile passes it: micro-grpc is not on every index, so a project installs it
    from where it came from here."""
    try:
        dist = importlib.metadata.distribution("micro-grpc")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return f"-e {shlex.quote(str(Path(__file__).resolve().parents[2]))}"
    return requirement(dist.read_text("direct_url.json"), dist.version)


def requirement(direct_url: str | None, version: str) -> str:
    """pip arguments for an installation described by PEP 610's ``direct_url.json``:
    a checkout (editable stays editable), a wheel or directory, a URL, or else (no
    such file: installed from an index) that version from the index."""
    if not direct_url:
        return f"micro-grpc=={version}"
    origin = json.loads(direct_url)
    url = urlparse(origin["url"])
    if url.scheme != "file":
        return shlex.quote(f"micro-grpc @ {origin['url']}")
    path = shlex.quote(unquote(url.path))
    return f"-e {path}" if origin.get("dir_info", {}).get("editable") else path


def scaffold(name: str, parent: Path, template: str) -> list[Path]:
    """Write the project; refuses to touch an existing non-empty directory."""
    values = names(name)
    root = parent / name
    if root.exists() and any(root.iterdir()):
        raise CliError(f"{root} already exists and is not empty")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    sources = templates_dir() / "new"
    written = []
    for layer in ("common", template):
        base = sources / layer
        for source in sorted(p for p in base.rglob("*") if p.is_file()):
            relative = str(source.relative_to(base)).replace("__pkg__", values["pkg"])
            relative = relative.replace("__dot__", ".")
            text = source.read_text()
            if relative.endswith(".j2"):
                relative = relative[: -len(".j2")]
                text = env.from_string(text).render(values)
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(target)
    return written
