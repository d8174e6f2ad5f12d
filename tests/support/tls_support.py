"""Throwaway certificates. For an etcd over TLS, made with the ``openssl`` command:
a CA, a certificate for 127.0.0.1 (IP SAN) that etcd serves, one a client presents,
and a second CA that signed neither. For micro's own TLS, ``Authority`` (trustme):
certificates naming services, as many as a test needs."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micro.config import Config
from micro.tls import Tls

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_certs(where: Path) -> Certs:
    assert OPENSSL is not None
    where.mkdir(exist_ok=True)

    def issue(name: str, *args: str) -> tuple[Path, Path]:
        cert, key = where / f"{name}.pem", where / f"{name}-key.pem"
        command = [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        command += ["-nodes", "-days", "1", "-subj", f"/CN={name}"]
        subprocess.run(
            [*command, "-keyout", str(key), "-out", str(cert), *args],
            check=True,
            capture_output=True,
            timeout=10,
        )
        return cert, key

    # keyUsage: Python 3.13's default context (VERIFY_X509_STRICT) refuses a CA without it.
    authority = ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    ca, ca_key = issue("ca", *authority)
    other_ca, _ = issue("other-ca", *authority)
    signed = ["-CA", str(ca), "-CAkey", str(ca_key), "-addext", "basicConstraints=CA:FALSE"]
    # clientAuth too: under --client-cert-auth etcd's HTTP gateway dials etcd with it.
    server = issue(
        "server",
        *signed,
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "extendedKeyUsage=serverAuth,clientAuth",
    )
    client = issue("client", *signed, "-addext", "extendedKeyUsage=clientAuth")
    return Certs(ca, *server, *client, other_ca)


class Authority:
    """A throwaway CA (trustme) writing PEM files under ``where``: ``ca`` is its
    certificate; ``issue`` makes a certificate and key for a name, as micro reads them."""

    def __init__(self, where: Path, name: str = "ca") -> None:
        import trustme

        self._ca = trustme.CA()
        self.where = where
        self.name = name
        where.mkdir(parents=True, exist_ok=True)
        self.ca = where / f"{name}.pem"
        self._ca.cert_pem.write_to_path(str(self.ca))

    def issue(
        self,
        *names: str,
        file: str | None = None,
        expired: bool = False,
    ) -> Pair:
        """A certificate for ``names`` (DNS names, the first its common name) and its key,
        written as ``<file>.pem`` and ``<file>-key.pem`` (file: the first name);
        ``expired``: one that ran out an hour ago."""
        now = datetime.datetime.now(datetime.timezone.utc)
        start = now - datetime.timedelta(days=1) if expired else None
        end = now - datetime.timedelta(hours=1) if expired else None
        leaf = self._ca.issue_cert(*names, not_before=start, not_after=end)
        stem = self.where / f"{self.name}-{file or names[0]}"
        pair = Pair(stem.with_name(stem.name + ".pem"), stem.with_name(stem.name + "-key.pem"))
        pair.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(pair.key))
        return pair

    def tls(self, name: str = "client") -> Tls:
        """A client's ``Tls``: a certificate for ``name``, trusting this CA."""
        pair = self.issue(name)
        return Tls(str(pair.cert), str(pair.key), str(self.ca))

    def config(self, pair: Pair | None, **options: Any) -> Config:
        """A memory-registry ``Config`` using ``pair`` and trusting this CA (mutual TLS)."""
        if pair is not None:
            options = {"tls_cert": str(pair.cert), "tls_key": str(pair.key), **options}
        return Config(**{"registry": "memory", "tls_ca": str(self.ca), **options})


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
