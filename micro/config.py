"""Options from keyword arguments and ``MICRO_*`` environment variables.

One frozen ``Config`` is read once, at startup; a bad value fails there with a
message naming the variable, never later in the middle of a call.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from micro.urls import masked, masked_all

REGISTRIES = ("mdns", "memory", "dns", "nats", "etcd")
BROKERS = ("grpc", "memory", "nats", "jetstream", "redis", "rabbitmq")
STRATEGIES = ("least_request", "round_robin", "random")


class ConfigError(ValueError):
    """A configuration value is unusable; the message names where it came from."""


# Ranges are what the machinery downstream can hold: the mDNS record TTL is 31 bits
# of seconds (RFC 2181), which is also well inside grpc's deadline (int64 nanoseconds
# since 1970); backoff doubles per retry, so a plan past 100 attempts is a typo.
MAX_SECONDS = 2**31 - 1
MAX_RETRIES = 100
MAX_CALLS = 1_000_000  # calls in progress on one server: far past what one process holds
MAX_THREADS = 1024  # threads for def handlers: each holds a stack of its own
# Messages server and client take by default: grpc's own default for received ones.
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
MAX_WORKERS = 1024  # processes `micro run --workers` starts: far past any host's cores


def _number(
    convert: Callable[[str], float], low: float, high: float, *, open_low: bool = False
) -> Callable[[str], Any]:
    """A parser of numbers from ``low`` (excluded if ``open_low``) to ``high``: the
    one range check of every numeric option, refusing ``inf`` and ``nan`` too."""
    what = "seconds" if convert is float else "a whole number"
    shown = f"{'(' if open_low else '['}{low:.15g}, {high:.15g}]"

    def parse(text: str) -> float:
        value = convert(text)
        below = value <= low if open_low else value < low
        if not math.isfinite(value) or below or value > high:
            raise ValueError(f"expected {what} in {shown}")
        return value

    return parse


_seconds = _number(float, 0, MAX_SECONDS, open_low=True)


def _addresses(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ipv4_addresses(text: str) -> tuple[str, ...]:
    addresses = _addresses(text)
    for address in addresses:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise ValueError(f"{address!r} is not an IPv4 address") from None
    return addresses


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected host:port")
    return text


def host_port(text: str) -> tuple[str, int | None]:
    """``host`` or ``host:port`` split (IPv6 in brackets: ``[::1]:50051``); the port is
    None when not given."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or (":" in host and not host.endswith("]")):
        host, port = text, ""  # no port: an unbracketed ':' belongs to an IPv6 address
    if not host or any(c in host for c in " /@") or (port and int(port) > 65535):
        raise ValueError("expected host or host:port (IPv6 as [addr] or [addr]:port)")
    return host, int(port) if port else None


def _host(text: str) -> str:
    host_port(text)
    return text


def _flag(text: str) -> bool:
    word = text.lower()
    if word not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("expected 1 or 0 (true/false, yes/no, on/off)")
    return word in ("1", "true", "yes", "on")


def workers_option(text: str) -> int:
    """A count of processes, or ``auto``: the cores this process may run on."""
    if text == "auto":
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    try:
        return int(_number(int, 1, MAX_WORKERS)(text))
    except ValueError:
        raise ValueError(f"expected auto or a whole number in [1, {MAX_WORKERS}]") from None


def _level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


@dataclass(frozen=True)
class Config:
    """Everything a ``Service`` or ``Client`` reads from its environment."""

    registry: str = "mdns"
    registry_address: tuple[str, ...] = ()
    registry_domain: str = "svc.cluster.local"  # where the dns registry looks names up
    # etcd: sign-in, and TLS from PEM files (EtcdRegistry's ca_file, cert_file, key_file)
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    registry_tls_ca: str | None = None
    registry_tls_cert: str | None = None
    registry_tls_key: str | None = None
    broker: str = "grpc"
    broker_address: tuple[str, ...] = ()
    server_address: str = "127.0.0.1:0"
    server_advertise: str | None = None  # host[:port] registered instead of the bound one
    server_max_calls: int | None = None  # calls in progress beyond which one is refused
    server_threads: int | None = None  # def handler calls at once (None: micro.workers')
    client_retries: int = 3
    client_request_timeout: float | None = None
    client_attempt_timeout: float | None = None
    register_ttl: float = 30.0
    register_interval: float = 10.0
    mdns_interfaces: tuple[str, ...] = ("127.0.0.1",)
    log_level: str | None = None
    # TLS from PEM files (micro.tls): this process's chain and key, and trusted roots;
    # with a CA, mutual TLS. Read again when they change.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    reflection: bool = True  # serve grpc reflection (lists every service to any caller)
    # Bearer tokens (micro.middleware.auth): the key verifying callers' tokens (a PEM
    # public key or a JWKS file), what they must say, rules (a JSON file), and this
    # service's own token for its outgoing calls.
    auth_public_key: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_rules: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    auth_allow_hs256: bool = False
    # Observability (micro.middleware): where a Service serves Prometheus /metrics, and
    # whether it writes an access log line per call and delivery.
    metrics_address: str | None = None
    access_log: bool = False
    workers: int = 1  # processes `micro run` serves the service from, each its own node

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            try:
                _PARSERS[name](text)
            except ValueError as e:
                shown = masked(value) if isinstance(value, str) else value
                raise ConfigError(f"{name}={shown!r}: {e}") from None
        if self.register_interval >= self.register_ttl:
            raise ConfigError(
                f"register_interval={self.register_interval} must be shorter than "
                f"register_ttl={self.register_ttl}, or nodes expire between refreshes"
            )

    def __repr__(self) -> str:
        """Addresses with their passwords masked (the registry password and the auth
        token are left out)."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("registry_address", "broker_address"):
                value = tuple(masked(url) for url in value)
            if f.repr:
                shown.append(f"{f.name}={value!r}")
        return f"Config({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """``MICRO_*`` variables over the defaults, keyword ``overrides`` over both
        (``None`` overrides are ignored: they mean "not given")."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = f"MICRO_{f.name.upper()}"
            text = env.get(variable)
            if text is None or text == "":
                continue
            try:
                values[f.name] = _PARSERS[f.name](text)
            except ValueError as e:
                raise ConfigError(f"{variable}={masked_all(text.split(','))!r}: {e}") from None
        return replace(cls(), **values).given(**overrides)

    def given(self, **overrides: Any) -> Config:
        """This config under the keyword arguments actually given (``None``: not given)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_PARSERS: dict[str, Callable[[str], Any]] = {
    "registry": _one_of(*REGISTRIES),
    "registry_address": _addresses,
    "registry_domain": str,
    "registry_username": str,
    "registry_password": str,
    "registry_tls_ca": str,
    "registry_tls_cert": str,
    "registry_tls_key": str,
    "broker": _one_of(*BROKERS),
    "broker_address": _addresses,
    "server_address": _address,
    "server_advertise": _host,
    "server_max_calls": _number(int, 1, MAX_CALLS),
    "server_threads": _number(int, 1, MAX_THREADS),
    "client_retries": _number(int, 0, MAX_RETRIES),
    "client_request_timeout": _seconds,
    "client_attempt_timeout": _seconds,
    "register_ttl": _seconds,
    "register_interval": _seconds,
    "mdns_interfaces": _ipv4_addresses,
    "log_level": _level,
    "tls_cert": str,
    "tls_key": str,
    "tls_ca": str,
    "reflection": _flag,
    "auth_public_key": str,
    "auth_issuer": str,
    "auth_audience": str,
    "auth_rules": str,
    "auth_token": str,
    "auth_allow_hs256": _flag,
    "metrics_address": _address,
    "access_log": _flag,
    "workers": workers_option,
}
