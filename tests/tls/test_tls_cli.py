"""The CLI over mutual TLS with a token: flags and MICRO_* variables alike, for
reflection (which a service with a key answers only to a valid token) and the call."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cli_support import Running, unique
from cli_support import micro as run_micro
from etcd_support import EtcdServer, running
from runtime_support import Echo
from tls_support import Authority
from token_support import Issuer

import micro
from micro.registry import MemoryRegistry
from micro.registry.etcd import EtcdRegistry


@pytest.fixture
async def secure(authority: Authority, tmp_path: Path) -> AsyncIterator[tuple[str, Issuer]]:
    """A node of echo serving mutual TLS and checking tokens; its address and issuer."""
    issuer = Issuer(tmp_path / "issuer")
    config = authority.config(authority.issue("echo"), auth_public_key=str(issuer.key))
    svc = micro.Service("echo", registry=MemoryRegistry(), config=config)
    svc.handle(Echo(svc.id))
    await svc.start()
    yield svc.address, issuer
    await svc.stop(grace=0)


async def test_micro_call_with_flags_and_with_variables(
    secure: tuple[str, Issuer], authority: Authority
) -> None:
    address, issuer = secure
    pair = authority.issue("cli")
    call = ("call", "echo", "Echo.Get", '{"text": "hi"}', "--address", address, "--json")
    flags = (
        "--tls-cert",
        str(pair.cert),
        "--tls-key",
        str(pair.key),
        "--tls-ca",
        str(authority.ca),
    )
    done = await asyncio.to_thread(run_micro, *call, *flags, "--token", issuer.token())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "hi"
    token = issuer.token()
    done = await asyncio.to_thread(
        lambda: run_micro(
            *call,
            MICRO_TLS_CERT=str(pair.cert),
            MICRO_TLS_KEY=str(pair.key),
            MICRO_TLS_CA=str(authority.ca),
            MICRO_AUTH_TOKEN=token,
        )
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "hi"
    refused = await asyncio.to_thread(run_micro, *call, *flags)  # no token
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr
    assert "a bearer token is required" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    with running(tmp_path) as etcd:
        yield etcd


@pytest.mark.backend
async def test_micro_health_checks_tls_nodes(authority: Authority, etcd_server: EtcdServer) -> None:
    """Nodes found through a registry, checked over mutual TLS (health needs no token)."""
    registry = EtcdRegistry([etcd_server.endpoint], timeout=10.0)
    svc = micro.Service("echo", registry=registry, config=authority.config(authority.issue("echo")))
    svc.handle(Echo(svc.id))
    await svc.start()
    try:
        pair = authority.issue("cli")
        done = await asyncio.to_thread(
            run_micro,
            "health",
            "echo",
            "--json",
            "--registry",
            "etcd",
            "--registry-address",
            etcd_server.endpoint,
            "--tls-cert",
            str(pair.cert),
            "--tls-key",
            str(pair.key),
            "--tls-ca",
            str(authority.ca),
        )
    finally:
        await svc.stop(grace=0)
        await registry.close()
    assert done.returncode == 0, done.stderr
    assert [row["status"] for row in json.loads(done.stdout)] == ["SERVING"]


async def test_a_missing_file_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    call = ("call", "echo", "Echo.Get", "{}", "--address", "127.0.0.1:1", "--tls-ca", str(missing))
    done = await asyncio.to_thread(run_micro, *call)
    assert done.returncode == 1
    assert (
        done.stderr
        == f"micro call: MICRO_TLS_CA={missing}: cannot read it: No such file or directory\n"
    )


def test_micro_run_serves_tls_from_its_flags(authority: Authority, tmp_path: Path) -> None:
    """--tls-cert/--tls-key reach the service micro run serves (as MICRO_TLS_*): its
    port answers a TLS handshake that verifies the service's name against the CA."""
    name = unique("app")
    (tmp_path / "app.py").write_text(f"import micro\nservice = micro.Service({name!r})\n")
    pair = authority.issue(name)
    flags = ("--tls-cert", str(pair.cert), "--tls-key", str(pair.key))
    running = Running("run", "app", *flags, cwd=tmp_path, MICRO_REGISTRY="memory")
    try:
        found = running.wait_for(rf"{name} serving on 127\.0\.0\.1:(\d+) ", timeout=60)
        context = ssl.create_default_context(cafile=str(authority.ca))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", int(found[1])), timeout=30)
        with context.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version() is not None  # the handshake verified the name
    finally:
        code, _ = running.stop()
    assert code == 0
