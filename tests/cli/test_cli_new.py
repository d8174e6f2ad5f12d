"""micro new: the scaffold's own `make test` passes right away, for each template."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import micro

EXPECTED = {
    "default": ["Makefile", "README.md", "Dockerfile", ".dockerignore", "k8s.yaml",
                "pyproject.toml", ".gitignore", "proto/shop_api/v1/shop_api.proto",
                "shop_api/__init__.py", "shop_api/handler.py", "shop_api/main.py",
                "tests/test_shop_api.py"],
}  # fmt: skip


@pytest.mark.backend  # needs make: a skip fails under MICRO_REQUIRE_BACKENDS=1
@pytest.mark.parametrize(("template", "passed"), [("default", 3), ("pubsub", 2)])
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


def kind(document: str) -> str:
    """The ``kind:`` of a YAML document (top-level key, so at the start of a line)."""
    (found,) = re.findall(r"^kind: (\w+)$", document, re.MULTILINE)
    return found


def test_new_refuses_bad_names_and_existing_directories(tmp_path: Path) -> None:
    bad = micro("new", "Shop!", "--dir", str(tmp_path))
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "micro new: service name 'Shop!': use lower-case letters and digits, words joined by - or _"
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
