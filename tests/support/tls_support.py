"""Throwaway certificates for an etcd over TLS, made with the ``openssl`` command:
a CA, a certificate for 127.0.0.1 (IP SAN) that etcd serves, one a client presents,
and a second CA that signed neither."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
