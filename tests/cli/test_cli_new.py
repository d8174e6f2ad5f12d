"""micro new: the scaffold's own `make test` passes right away, for each template."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import micro

from micro.cli.new import requirement

EXPECTED = {
    "default": ["Makefile", "README.md", "Dockerfile", ".dockerignore", "k8s.yaml",
                "pyproject.toml", ".gitignore", "proto/shop_api/v1/shop_api.proto",
                "shop_api/__init__.py", "shop_api/handler.py", "shop_api/main.py",
                "tests/test_shop_api.py"],
}  # fmt: skip


@pytest.mark.backend  # needs make: a skip fails under MICRO_REQUIRE_BACKENDS=1
@pytest.mark.parametrize(("template", "passed"), [("default", 4), ("pubsub", 3)])
def test_scaffold_tests_pass(tmp_path: Path, template: str, passed: int) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    made = micro("new", "shop-api", "--dir", str(tmp_path), "--template", template)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "shop-api"
    for name in EXPECTED["default"]:
        assert (root / name).is_file(), name
    done = subprocess.run(
        ["make", "-C", str(root), "test", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{passed} passed" in done.stdout
    # A Deployment and a headless Service (for the DNS registry), one document each.
    manifest = (root / "k8s.yaml").read_text()
    documents = {kind(d): d for d in manifest.split("\n---\n")}
    assert sorted(documents) == ["Deployment", "Service"]
    assert "\n  clusterIP: None" in documents["Service"]
    assert "\n    - name: grpc" in documents["Service"]  # the SRV records' _grpc._tcp
    assert "value: dns\n" in documents["Deployment"]  # MICRO_REGISTRY=dns
    assert "readinessProbe:" in documents["Deployment"]


@pytest.mark.backend  # needs make and pip's sources: a skip fails under MICRO_REQUIRE_BACKENDS=1
@pytest.mark.timeout(900)  # two pip installs into a fresh venv, on a loaded machine
def test_fresh_scaffold_makes_its_own_venv(tmp_path: Path) -> None:
    """As a new user outside this repository: `make test` makes .venv with micro-grpc
    from this installation (it is on no index), and a set-up that failed half-way is
    not taken as done."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    assert not tmp_path.resolve().is_relative_to(Path(__file__).resolve().parents[2])
    assert micro("new", "shop", "--dir", str(tmp_path)).returncode == 0
    root = tmp_path / "shop"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MICRO_GRPC", "MAKEFLAGS")}
    env["PATH"] = os.pathsep.join(  # no venv of ours on the way
        p for p in env["PATH"].split(os.pathsep) if not Path(p, "micro").exists()
    )

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-C", str(root), *args], capture_output=True,
                              text=True, env=env, timeout=800)  # fmt: skip

    broken = make("test", "MICRO_GRPC=/nowhere/micro-grpc")
    assert broken.returncode != 0
    assert "/nowhere/micro-grpc" in broken.stderr
    assert not (root / ".venv" / ".installed").exists()
    done = make("test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    origin = subprocess.run(
        [str(root / ".venv/bin/python"), "-c", "import micro; print(micro.__file__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(origin.stdout.strip()).parent == Path(__file__).resolve().parents[2] / "micro"


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        (None, "micro-grpc==1.2.3"),  # from an index
        ('{"url": "file:///src/micro%20grpc", "dir_info": {"editable": true}}',
         "-e '/src/micro grpc'"),
        ('{"url": "file:///src/micro-grpc", "dir_info": {}}', "/src/micro-grpc"),
        ('{"url": "file:///w/micro_grpc-1.2.3-py3-none-any.whl", "archive_info": {}}',
         "/w/micro_grpc-1.2.3-py3-none-any.whl"),
        ('{"url": "https://example.org/micro_grpc-1.2.3.tar.gz", "archive_info": {}}',
         "'micro-grpc @ https://example.org/micro_grpc-1.2.3.tar.gz'"),
    ],
)  # fmt: skip
def test_requirement_follows_where_micro_grpc_came_from(
    direct_url: str | None, expected: str
) -> None:
    """PEP 610's direct_url.json as pip writes it, to the Makefile's MICRO_GRPC."""
    assert requirement(direct_url, "1.2.3") == expected


def kind(document: str) -> str:
    """The ``kind:`` of a YAML document (top-level key, so at the start of a line)."""
    found: list[str] = re.findall(r"^kind: (\w+)$", document, re.MULTILINE)
    (value,) = found
    return value


def test_new_refuses_bad_names_and_existing_directories(tmp_path: Path) -> None:
    bad = micro("new", "Shop!", "--dir", str(tmp_path))
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "micro new: service name 'Shop!': must start with a lower-case letter"
    ]
    for name, wrong in [
        ("9lives", "must start with a lower-case letter"),
        ("shop!", "'!' not allowed: use lower-case letters, digits, - and _"),
        ("shop--api", "words are joined by one - or _, and it cannot end with one"),
    ]:
        assert micro("new", name, "--dir", str(tmp_path)).stderr.splitlines() == [
            f"micro new: service name {name!r}: {wrong}"
        ]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    taken = micro("new", "taken", "--dir", str(tmp_path))
    assert taken.returncode == 1
    assert taken.stderr.splitlines() == [
        f"micro new: {tmp_path / 'taken'} already exists and is not empty"
    ]


def test_help_shows_examples() -> None:
    for command in ("gen", "new", "run", "call", "stream", "publish", "subscribe", "health"):
        done = micro(command, "--help")
        assert done.returncode == 0
        assert "examples:" in done.stdout, command


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    done = micro("completion", shell)
    assert done.returncode == 0
    if shell == "fish":
        assert "-l registry-address" in done.stdout
        assert "complete -c micro -f -n __fish_use_subcommand" in done.stdout
        return
    assert "--registry-address" in done.stdout
    assert "complete -F _micro micro" in done.stdout
    if shell == "bash" and shutil.which("bash"):
        check = subprocess.run(["bash", "-n"], input=done.stdout, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr
