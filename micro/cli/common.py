"""What every ``micro`` command shares: config flags, the error type, registry access."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from micro.config import BROKERS, REGISTRIES, Config
from micro.registry import Registry, RegistryError, from_config
from micro.urls import masked_all

T = TypeVar("T")


class CliError(Exception):
    """Bad input or an unusable answer: printed as one line, the command exits 1."""


def options() -> argparse.ArgumentParser:
    """The flags every command that talks to services takes: they override the
    ``MICRO_*`` variables of the same names."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("configuration (over MICRO_* variables)")
    group.add_argument("--registry", choices=REGISTRIES, help="registry backend (MICRO_REGISTRY)")
    group.add_argument(
        "--registry-address",
        metavar="ADDR[,ADDR]",
        help="registry servers (MICRO_REGISTRY_ADDRESS)",
    )
    group.add_argument("--broker", choices=BROKERS, help="broker backend (MICRO_BROKER)")
    group.add_argument(
        "--broker-address", metavar="ADDR[,ADDR]", help="broker servers (MICRO_BROKER_ADDRESS)"
    )
    for name in ("cert", "key", "ca"):
        variable = f"MICRO_TLS_{name.upper()}"
        group.add_argument(f"--tls-{name}", metavar="PEM", help=f"TLS ({variable})")
    group.add_argument("--token", help="bearer token sent with calls (MICRO_AUTH_TOKEN)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return common


def config(args: argparse.Namespace) -> Config:
    """``Config.from_env()`` under the flags given on the command line."""
    return Config.from_env(
        registry=args.registry,
        registry_address=_split(args.registry_address),
        broker=args.broker,
        broker_address=_split(args.broker_address),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        auth_token=args.token,
    )


def _split(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def where(config: Config) -> str:
    """The registry a lookup went to, for error lines."""
    if config.registry == "mdns":
        return f"mdns registry on {','.join(config.mdns_interfaces)}"
    if config.registry == "memory":
        return "memory registry (this process only)"
    if config.registry == "dns":
        servers = masked_all(config.registry_address) or "the system nameservers"
        return f"dns registry ({config.registry_domain} via {servers})"
    servers = masked_all(config.registry_address) or "its default address"
    return f"{config.registry} registry at {servers}"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on a fresh event loop."""
    return asyncio.run(main)


@contextlib.asynccontextmanager
async def opened(config: Config) -> AsyncIterator[Registry]:
    """The registry ``config`` names, closed afterwards."""
    registry = from_config(config)
    try:
        yield registry
    finally:
        await registry.close()


async def asking(config: Config, what: Callable[[], Awaitable[T]]) -> T:
    """A registry call whose failure becomes one line naming the registry."""
    try:
        return await what()
    except RegistryError as e:
        text = str(e)
        # etcd and NATS name themselves ("etcd registry at …") with the servers as
        # dialled (scheme stripped, defaults filled in), better than ours.
        if f"{config.registry} registry at" in text.lower():
            raise CliError(text) from None
        raise CliError(f"{where(config)}: {text}") from None


def pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    """``key=value`` arguments (``-m``, ``-H``) as pairs; keys lower-cased as gRPC
    metadata requires."""
    result = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} {item!r}: expected key=value")
        result.append((key.strip().lower(), value))
    return result
