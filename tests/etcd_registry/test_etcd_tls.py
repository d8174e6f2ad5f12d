"""EtcdRegistry over TLS against a real etcd serving throwaway certificates
(tls_support): register, discover and watch; mutual TLS; sign-in and files from
``MICRO_*`` variables; certificates etcd or the registry refuses; bad options."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from etcd_support import EtcdServer, running
from registry_support import next_event, nodes_by_version, service, summary
from tls_support import OPENSSL, Certs, make_certs

from micro.config import Config
from micro.registry import EventType, RegistryError, from_config
from micro.registry.etcd import EtcdRegistry

pytestmark = pytest.mark.backend

C, D = EventType.CREATE, EventType.DELETE
Open = Callable[..., EtcdRegistry]


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    if OPENSSL is None:
        pytest.skip("the openssl command is missing")
    return make_certs(tmp_path / "certs")


@pytest.fixture
def tls_etcd(tmp_path: Path, certs: Certs) -> Iterator[EtcdServer]:
    """etcd serving TLS, asking clients for no certificate."""
    with running(tmp_path, tls=certs) as server:
        yield server


@pytest.fixture
def mtls_etcd(tmp_path: Path, certs: Certs) -> Iterator[EtcdServer]:
    """etcd serving TLS to clients with a certificate from ``certs.ca`` only."""
    with running(tmp_path, tls=certs, client_cert_auth=True) as server:
        yield server


@pytest.fixture
async def open_registry() -> AsyncIterator[Open]:
    opened: list[EtcdRegistry] = []

    def open_registry(*endpoints: str, **options: object) -> EtcdRegistry:
        registry = EtcdRegistry(endpoints, **options)  # type: ignore[arg-type]
        opened.append(registry)
        return registry

    yield open_registry
    for registry in opened:
        await registry.close()


async def test_register_discover_and_watch(
    tls_etcd: EtcdServer, certs: Certs, open_registry: Open, name: str
) -> None:
    writer = open_registry(tls_etcd.url, ca_file=certs.ca)  # https://: TLS
    reader = open_registry(tls_etcd.endpoint, ca_file=str(certs.ca))  # a CA file: TLS too
    events = reader.watch(name)
    await reader.list_services()  # the watch has read the store: it sees what follows
    await writer.register(service(name, "n1"), 30)
    assert summary(await next_event(events, 5)) == (C, name, ("n1",))
    assert nodes_by_version(await reader.get_service(name)) == {"1.0": {"n1"}}
    await writer.deregister(service(name, "n1"))
    assert summary(await next_event(events, 5)) == (D, name, ("n1",))
    assert await reader.get_service(name) == []


async def test_mutual_tls(
    mtls_etcd: EtcdServer, certs: Certs, open_registry: Open, name: str
) -> None:
    registry = open_registry(
        mtls_etcd.url, ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.client_key
    )
    await registry.register(service(name, "n1"), 30)
    assert nodes_by_version(await registry.get_service(name)) == {"1.0": {"n1"}}
    listed = await asyncio.to_thread(mtls_etcd.ctl, "get", "--prefix", "--keys-only", "/micro/")
    assert f"/micro/registry/{name}/n1" in listed.split()
    without_cert = open_registry(mtls_etcd.url, ca_file=certs.ca)
    with pytest.raises(RegistryError, match=r"(?i)handshake") as failed:
        await without_cert.get_service(name)
    assert mtls_etcd.endpoint in str(failed.value)


async def test_sign_in_and_client_certificate_from_the_environment(
    mtls_etcd: EtcdServer, certs: Certs, name: str
) -> None:
    for command in (
        ("user", "add", "root", "--new-user-password=s3cret"),
        ("role", "add", "root"),
        ("user", "grant-role", "root", "root"),
        ("auth", "enable"),
    ):
        await asyncio.to_thread(mtls_etcd.ctl, *command)
    env = {
        "MICRO_REGISTRY": "etcd",
        "MICRO_REGISTRY_ADDRESS": mtls_etcd.url,
        "MICRO_REGISTRY_USERNAME": "root",
        "MICRO_REGISTRY_PASSWORD": "s3cret",
        "MICRO_REGISTRY_TLS_CA": str(certs.ca),
        "MICRO_REGISTRY_TLS_CERT": str(certs.client_cert),
        "MICRO_REGISTRY_TLS_KEY": str(certs.client_key),
    }
    config = Config.from_env(env)
    assert "s3cret" not in repr(config)
    right = from_config(config)
    wrong = from_config(Config.from_env({**env, "MICRO_REGISTRY_PASSWORD": "guess"}))
    try:
        assert isinstance(right, EtcdRegistry)
        await right.register(service(name, "n1"), 30)
        assert nodes_by_version(await right.get_service(name)) == {"1.0": {"n1"}}
        with pytest.raises(RegistryError, match="authentication failed"):
            await wrong.get_service(name)
    finally:
        await right.close()
        await wrong.close()


@pytest.mark.parametrize("case", ["a CA that did not sign etcd's", "plain gRPC to TLS"])
async def test_a_refused_connection_fails_at_once_naming_the_endpoint(
    tls_etcd: EtcdServer, certs: Certs, open_registry: Open, case: str
) -> None:
    """At the handshake, in one line, not by running out the request timeout."""
    timeout = 5.0
    if case == "plain gRPC to TLS":
        registry = open_registry(tls_etcd.endpoint, timeout=timeout)
    else:
        registry = open_registry(tls_etcd.url, ca_file=certs.other_ca, timeout=timeout)
    started = time.monotonic()
    with pytest.raises(RegistryError) as failed:
        await registry.register(service("x", "n1"), 30)
    assert time.monotonic() - started < timeout  # refused, not waited out
    message = str(failed.value)
    assert message.startswith(f"etcd registry at {tls_etcd.endpoint} is unreachable (register")
    assert "\n" not in message
    if case != "plain gRPC to TLS":
        assert "CERTIFICATE_VERIFY_FAILED" in message
    with pytest.raises(RegistryError, match=tls_etcd.endpoint):
        await next_event(registry.watch(), 5)


def test_bad_tls_options_fail_at_construction(certs: Certs, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    cases: list[tuple[dict[str, object], str]] = [
        ({"ca_file": missing}, f"ca_file '{missing}': .*No such file"),
        ({"ca_file": certs.client_key}, "ca_file .*no certificate"),
        ({"key_file": certs.client_key}, "both cert_file and key_file"),
        ({"cert_file": certs.client_cert}, "both cert_file and key_file"),
        ({"cert_file": certs.client_cert, "key_file": certs.server_key}, "key values mismatch"),
        ({"endpoints": ["https://127.0.0.1:1", "http://127.0.0.1:2"]}, "'http://127.0.0.1:2'"),
        ({"endpoints": ["http://127.0.0.1:2"], "ca_file": certs.ca}, r"plain http, .*\(ca_file\)"),
        ({"endpoints": ["ftp://127.0.0.1:2"]}, "expected http:// or https://"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            EtcdRegistry(**options)  # type: ignore[arg-type]
    assert EtcdRegistry(["https://127.0.0.1:2379/", "[::1]:2379"]).endpoints == [
        "127.0.0.1:2379",
        "[::1]:2379",
    ]


def test_bad_settings_in_the_environment(certs: Certs, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    cases: list[tuple[dict[str, str], str]] = [
        ({"MICRO_REGISTRY_TLS_KEY": str(certs.client_key)}, "both cert_file and key_file"),
        ({"MICRO_REGISTRY_TLS_CA": str(missing)}, f"ca_file '{missing}'"),
        ({"MICRO_REGISTRY_USERNAME": "root"}, "both username and password"),
        ({"MICRO_REGISTRY_ADDRESS": "https://127.0.0.1:1,http://127.0.0.1:2"}, "plain http"),
    ]
    for env, message in cases:
        config = Config.from_env({"MICRO_REGISTRY": "etcd", **env})
        with pytest.raises(ValueError, match=message):
            from_config(config)
