"""Transport security: this process's certificate, key and trusted roots, read from
PEM files and read again when they change.

One ``Tls`` serves every port and opens every channel micro makes. With a
certificate a server speaks TLS only; with a CA (``MICRO_TLS_CA``) clients verify
servers against it and servers require client certificates signed by it (mutual TLS).
Identity, not just encryption: a server's certificate names its service (a DNS
subject alternative name), and a client checks the name of the service it called,
never the address a registry gave, so a forged registry entry fails the handshake
before any metadata is sent.

    tls = Tls(cert="greeter.pem", key="greeter-key.pem", ca="ca.pem")
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from micro.config import Config, ConfigError

log = logging.getLogger("micro.tls")

TLS_KEY = "tls"
"""Registry node metadata: present on a node that serves TLS only; its value is the
name the node's certificate carries (its service's name)."""

_VARIABLES = {"cert": "MICRO_TLS_CERT", "key": "MICRO_TLS_KEY", "ca": "MICRO_TLS_CA"}


class TlsError(ConfigError):
    """Certificates or keys that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class _Material:
    """What the files held when last read, checked: PEM bytes and the names the
    certificate carries."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None
    names: tuple[str, ...]


class Tls:
    """Certificate chain and key of this process (``cert``, ``key``: served, and
    presented to servers that ask) and trusted roots (``ca``), as PEM file paths.

    Bad files fail here, naming the setting: a missing or unreadable file, a key that
    does not match the certificate, an expired certificate, a CA file with no
    certificate. A change to the files later is picked up by servers at their next
    handshake and by channels opened after it; a change that does not check out (a
    half-written rotation) is logged and the files last good stay in use."""

    def __init__(self, cert: str | None = None, key: str | None = None, ca: str | None = None):
        if (cert is None) != (key is None):
            given, missing = ("cert", "key") if key is None else ("key", "cert")
            raise TlsError(
                f"{_VARIABLES[given]} is set but {_VARIABLES[missing]} is not: "
                "a certificate needs its key"
            )
        if cert is None and ca is None:
            raise TlsError("TLS needs MICRO_TLS_CERT and MICRO_TLS_KEY, or MICRO_TLS_CA, or both")
        self.cert, self.key, self.ca = self._paths = cert, key, ca
        self._lock = threading.Lock()
        self._raw = _raw(self._paths)
        self._material = _checked(self._paths, self._raw)
        self._served = self._material  # what the server credentials last handed grpc

    @classmethod
    def from_config(cls, config: Config) -> Tls | None:
        """The TLS a ``Config`` asks for, None for plaintext."""
        if config.tls_cert is None and config.tls_key is None and config.tls_ca is None:
            return None
        return cls(config.tls_cert, config.tls_key, config.tls_ca)

    def __repr__(self) -> str:
        return f"Tls(cert={self.cert!r}, key={self.key!r}, ca={self.ca!r})"

    @property
    def serves(self) -> bool:
        """Whether a server with these settings speaks TLS (it has a certificate)."""
        return self.cert is not None

    @property
    def mutual(self) -> bool:
        """Whether peers must present a certificate signed by the CA."""
        return self.ca is not None

    @property
    def names(self) -> tuple[str, ...]:
        """The DNS names this process's certificate carries."""
        return self.current().names

    def check_name(self, name: str) -> None:
        """Fail unless the certificate names ``name``: clients calling service ``name``
        would refuse every handshake."""
        if self.serves and name not in self.names:
            raise TlsError(
                f"{_VARIABLES['cert']}={self.cert}: the certificate names "
                f"{', '.join(self.names) or 'no DNS name'}, not the service {name!r} "
                f"(clients check that name: add it as a DNS subject alternative name)"
            )

    def current(self) -> _Material:
        """The files as they are now if they changed and check out, else as last read.
        Read whole each time (a handshake's or a new channel's worth of work): a
        rewrite within one timestamp tick is still seen."""
        try:
            raw: _Raw | None = _raw(self._paths)
        except TlsError as e:
            raw, failure = None, e
        with self._lock:
            if raw == self._raw:
                return self._material
            if raw is not None:
                self._raw = raw
                try:
                    self._material = _checked(self._paths, raw)
                    return self._material
                except TlsError as e:
                    failure = e
            log.warning("TLS files changed but cannot be used, keeping the last good: %s", failure)
            return self._material

    # -- credentials ------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for a server port; each handshake sees the files as they are."""
        if not self.serves:
            raise TlsError("a TLS server needs MICRO_TLS_CERT and MICRO_TLS_KEY")

        def fetch() -> Any:  # grpc calls it before each handshake: None means no change
            material = self.current()
            if material is self._served:
                return None
            self._served = material
            return _server_configuration(material)

        return grpc.dynamic_ssl_server_credentials(
            _server_configuration(self._served), fetch, require_client_authentication=self.mutual
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials for a new channel: the files as they are now (no CA: the
        system's roots)."""
        material = self.current()
        return grpc.ssl_channel_credentials(
            root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
        )


def uses_tls(tls: Tls | None, node_metadata: Mapping[str, str]) -> bool:
    """Whether a channel to a node is TLS: always when this process trusts a CA (a
    registry entry, forged or not, cannot talk it into plaintext), and for any node
    whose entry says it serves TLS (verified against the system's roots without a CA)."""
    return (tls is not None and tls.mutual) or TLS_KEY in node_metadata


def plaintext_refused(tls: Tls | None, node_metadata: Mapping[str, str]) -> bool:
    """Whether a client with ``tls`` never calls such a node: it trusts a CA, so calls
    in TLS only, and the node's entry does not say it serves TLS (trying would cost
    an attempt and a failed handshake)."""
    return tls is not None and tls.mutual and TLS_KEY not in node_metadata


def aio_channel(
    address: str,
    name: str,
    tls: Tls | None,
    secure: bool,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to the node at ``address`` of service ``name``: with
    ``secure``, TLS checking the certificate names ``name`` (what the registry said of
    the address is not trusted); else plaintext."""
    if not secure:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, _credentials(tls), (*options, *_verifying(name)))


def blocking_channel(
    address: str,
    name: str,
    tls: Tls | None,
    secure: bool,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """``aio_channel`` for blocking calls."""
    if not secure:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, _credentials(tls), (*options, *_verifying(name)))


def _credentials(tls: Tls | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials() if tls is None else tls.channel_credentials()


def _verifying(name: str) -> tuple[tuple[str, str], ...]:
    """Options making a TLS channel verify the server's certificate against ``name``
    (and send it as the authority), whatever address it dials."""
    return (("grpc.ssl_target_name_override", name), ("grpc.default_authority", name))


def _server_configuration(material: _Material) -> Any:
    assert material.key is not None
    assert material.cert is not None
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.ca
    )


_Paths = tuple[str | None, str | None, str | None]  # cert, key, ca
_Raw = tuple[bytes | None, bytes | None, bytes | None]  # their content


def _raw(paths: _Paths) -> _Raw:
    cert, key, ca = (_file(name, path) for name, path in zip(_VARIABLES, paths, strict=True))
    return cert, key, ca


def _checked(paths: _Paths, raw: _Raw) -> _Material:
    """The files' content, checked: the key matches the certificate, which is in date;
    the CA file holds certificates."""
    cert_pem, key_pem, ca_pem = raw
    names: tuple[str, ...] = ()
    if cert_pem is not None and key_pem is not None:
        names = _check_pair(paths, cert_pem, key_pem)
    if ca_pem is not None:
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError as e:
            raise TlsError(f"MICRO_TLS_CA={paths[2]}: no PEM certificate in it ({e})") from None
    return _Material(cert_pem, key_pem, ca_pem, names)


def _file(name: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TlsError(f"{_VARIABLES[name]}={path}: cannot read it: {e.strerror}") from None


def _check_pair(paths: _Paths, cert_pem: bytes, key_pem: bytes) -> tuple[str, ...]:
    """The certificate's DNS names, once its key matches and it is in date."""
    path, key_path, _ = paths
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError as e:
        raise TlsError(f"MICRO_TLS_CERT={path}: no PEM certificate in it ({e})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise TlsError(
            f"MICRO_TLS_KEY={key_path}: not an unencrypted PEM private key ({e})"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(der, public):
        raise TlsError(
            f"MICRO_TLS_KEY={key_path} does not match the certificate in MICRO_TLS_CERT={path}"
        )
    now, when = datetime.datetime.now(datetime.timezone.utc), "%Y-%m-%d %H:%M UTC"
    if now > leaf.not_valid_after_utc:
        raise TlsError(
            f"MICRO_TLS_CERT={path}: expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now < leaf.not_valid_before_utc:
        raise TlsError(
            f"MICRO_TLS_CERT={path}: not valid before {leaf.not_valid_before_utc:{when}}"
        )
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.value.get_values_for_type(x509.DNSName))
