"""``micro.registry`` names every backend, each imported on first use: without its
extra, the import says what to install, and a star import still works; mypy sees the
backend classes themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_backends_are_imported_on_first_use() -> None:
    code = """if True:
        import sys
        import micro.registry
        loaded = {"aetcd", "nats", "zeroconf", "micro.registry.dns"} & set(sys.modules)
        assert not loaded, loaded
        from micro.registry import DnsRegistry, EtcdRegistry, MdnsRegistry, NatsRegistry
        import micro.registry.dns, micro.registry.etcd, micro.registry.mdns, micro.registry.nats
        assert DnsRegistry is micro.registry.dns.DnsRegistry
        assert EtcdRegistry is micro.registry.etcd.EtcdRegistry
        assert MdnsRegistry is micro.registry.mdns.MdnsRegistry
        assert NatsRegistry is micro.registry.nats.NatsRegistry
        try:
            micro.registry.Nothing
        except AttributeError as e:
            assert str(e) == "module 'micro.registry' has no attribute 'Nothing'", e
        else:
            raise AssertionError("micro.registry.Nothing")
    """
    done = run(code)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("library", "name", "extra"),
    [("aetcd", "EtcdRegistry", "etcd"), ("nats", "NatsRegistry", "nats")],
)
def test_without_the_extra(library: str, name: str, extra: str) -> None:
    code = f"""if True:
        import sys
        sys.modules[{library!r}] = None
        from micro.registry import *
        assert "MemoryRegistry" in dir()
        from micro.registry import {name}
    """
    done = run(code)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("ImportError: ")
    assert done.stderr.strip().endswith(f"install `micro-grpc[{extra}]`")


def test_mypy_sees_the_backend_classes(tmp_path: Path) -> None:
    usage = tmp_path / "usage.py"
    usage.write_text(
        "from micro.registry import DnsRegistry, EtcdRegistry, MdnsRegistry, NatsRegistry\n"
        "reveal_type(EtcdRegistry(ca_file='ca.pem'))\n"
        "reveal_type(NatsRegistry())\n"
        "reveal_type(DnsRegistry())\n"
        "reveal_type(MdnsRegistry())\n"
        "EtcdRegistry(ca_file=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(usage)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if ": " in line]
    assert lines == [
        'note: Revealed type is "micro.registry.etcd.EtcdRegistry"',
        'note: Revealed type is "micro.registry.nats.NatsRegistry"',
        'note: Revealed type is "micro.registry.dns.DnsRegistry"',
        'note: Revealed type is "micro.registry.mdns.MdnsRegistry"',
        'error: Argument "ca_file" to "EtcdRegistry" has incompatible type "int";'
        ' expected "str | PathLike[str] | None"  [arg-type]',
    ], done.stdout
