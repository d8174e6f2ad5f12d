"""Throwaway token issuers for auth tests: a key pair whose public half is written as
micro reads it (a PEM file or a JWKS file), and tokens signed by the private half."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = ("RS256", "ES256", "EdDSA")


class Issuer:
    """Signs tokens with a fresh ``algorithm`` key; ``key`` is its public key file
    (``jwks``: a JWKS file naming it ``kid``)."""

    def __init__(self, where: Path, algorithm: str = "ES256", *, jwks: bool = False) -> None:
        self.algorithm = algorithm
        self.kid = f"{algorithm.lower()}-1"
        make: Any = {
            "RS256": lambda: rsa.generate_private_key(65537, 2048),
            "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate,
        }[algorithm]
        self._private: Any = make()
        where.mkdir(parents=True, exist_ok=True)
        public: Any = self._private.public_key()
        if jwks:
            jwk = {**_jwk(public, algorithm), "kid": self.kid, "alg": algorithm}
            self.key = where / f"{self.kid}.jwks.json"
            self.key.write_text(json.dumps({"keys": [jwk]}))
        else:
            self.key = where / f"{self.kid}.pem"
            self.key.write_bytes(
                public.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def token(
        self, subject: str = "alice", *, scopes: str = "", lifetime: float = 300, **claims: Any
    ) -> str:
        """A token for ``subject`` with ``scopes`` (space-separated), valid from now for
        ``lifetime`` seconds (negative: expired); ``claims`` add or override."""
        now = time.time()
        body = {"sub": subject, "iat": int(now), "exp": int(now + lifetime), **claims}
        if scopes:
            body["scope"] = scopes
        headers = {"kid": self.kid}
        return jwt.encode(body, self._private, algorithm=self.algorithm, headers=headers)


def _jwk(public: Any, algorithm: str) -> dict[str, Any]:
    kind: Any = {
        "RS256": jwt.algorithms.RSAAlgorithm,
        "ES256": jwt.algorithms.ECAlgorithm,
        "EdDSA": jwt.algorithms.OKPAlgorithm,
    }[algorithm]
    return dict(json.loads(kind.to_jwk(public)))
