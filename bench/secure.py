"""Secure calls: mutual TLS plus a bearer token, against plaintext and raw grpc.aio.

Two greeter server processes: the plain one of ``bench.rpc`` and one serving mutual
TLS that verifies a JWT (ES256) on every call (``--secure DIR``: certificates, a CA
and the issuer's public key made here, in a temporary directory). Variants, async
unary SayHello in interleaved rounds (``bench.load``):

- ``raw`` / ``raw-tls``: grpc.aio multicallables, plaintext / over TLS with the same
  client certificate and token header (the baselines);
- ``micro`` / ``micro-tls``: a ``micro.Client`` at the address, plaintext / with the
  TLS settings and ``MICRO_AUTH_TOKEN``.

Reported: ``micro-tls`` against ``raw-tls`` (what micro adds to a secure call),
``micro-tls`` against ``micro`` (what security costs a micro call, server side
included) and ``micro`` against ``raw`` (the plain overhead, for reference).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import micro
from bench import greeter, load
from bench.rpc import raw_multicallable, settings_for
from bench.servers import greeter_server
from micro.tls import Tls, aio_channel

NAME = "greeter"  # the name the server's certificate carries
PAIRS = {"micro/raw": ("micro", "raw"), "micro-tls/raw-tls": ("micro-tls", "raw-tls")}
PAIRS["micro-tls/micro"] = ("micro-tls", "micro")


def make_secrets(where: Path) -> str:
    """Certificates (CA, server for NAME, client) and a token issuer's key in
    ``where``; returns a token valid for an hour."""
    import trustme  # dev dependency, as the benchmarks are

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    for name, who in (("server", NAME), ("client", "bench-client")):
        leaf = ca.issue_cert(who)
        (where / f"{name}.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(where / f"{name}-key.pem"))
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (where / "issuer.pem").write_bytes(public)
    claims = {"sub": "bench", "exp": int(time.time()) + 3600}
    return jwt.encode(claims, key, algorithm="ES256")


def client_tls(where: Path) -> Tls:
    return Tls(str(where / "client.pem"), str(where / "client-key.pem"), str(where / "ca.pem"))


async def compare(
    plain: str,
    secure: str,
    where: Path,
    token: str,
    settings: load.Settings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    generated = greeter.load()
    pb2 = generated.pb2
    tls = client_tls(where)
    channels = {
        "raw": grpc.aio.insecure_channel(plain),
        "raw-tls": aio_channel(secure, NAME, tls, True),
    }
    header = (("authorization", f"Bearer {token}"),)
    secure_config = micro.Config(
        registry="memory",
        tls_cert=tls.cert,
        tls_key=tls.key,
        tls_ca=tls.ca,
        auth_token=token,
    )
    clients = {
        "micro": (micro.Client(config=micro.Config(registry="memory")), plain),
        "micro-tls": (micro.Client(config=secure_config), secure),
    }
    raw_plain = raw_multicallable(channels["raw"], pb2, "unary")
    raw_secure = raw_multicallable(channels["raw-tls"], pb2, "unary")

    async def raw_tls_call(request: Any) -> None:
        await raw_secure(request, metadata=header)

    calls: dict[str, load.AsyncCall] = {"raw": raw_plain, "raw-tls": raw_tls_call}
    for name, (client, address) in clients.items():
        options = micro.CallOptions(address=address)
        calls[name] = generated.micro.GreeterClient(NAME, client, options=options).say_hello
    request = pb2.HelloRequest(name="bench")
    results = []
    try:
        for concurrency in settings.concurrency:
            log(f"secure: async unary, concurrency {concurrency}")
            rounds = await load.interleaved(calls, request, concurrency, settings)
            results.append(
                {
                    "concurrency": concurrency,
                    "variants": {n: load.variant_stats(r) for n, r in rounds.items()},
                    "ratios": {
                        pair: load.versus(rounds[base], rounds[other])
                        for pair, (other, base) in PAIRS.items()
                    },
                }
            )
    finally:
        for channel in channels.values():
            await channel.close(grace=None)
        for client, _ in clients.values():
            await client.close()
    return results


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    settings = settings_for(quick)
    with tempfile.TemporaryDirectory(prefix="micro-bench-") as temporary:
        where = Path(temporary)
        token = make_secrets(where)
        with greeter_server() as plain, greeter_server("--secure", str(where)) as secure:
            results = asyncio.run(compare(plain, secure, where, token, settings, log))
    return {"settings": asdict(settings), "pairs": list(PAIRS), "results": results}
