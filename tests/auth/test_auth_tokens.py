"""Tokens a Verifier accepts and refuses, and rules read from a file: the checks
themselves, without I/O (calls through real servers are in test_calls.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from token_support import ALGORITHMS, Issuer

from micro import errors
from micro.config import Config
from micro.middleware.auth import ANY, PUBLIC, Auth, AuthError, Rule, Verifier, load_rules


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("jwks", [False, True], ids=["pem", "jwks"])
def test_a_valid_token_names_its_caller(tmp_path: Path, algorithm: str, jwks: bool) -> None:
    issuer = Issuer(tmp_path, algorithm, jwks=jwks)
    identity = Verifier(str(issuer.key)).verify(issuer.token("alice", scopes="orders:read admin"))
    assert (identity.subject, identity.scopes) == ("alice", ("orders:read", "admin"))


def refusal(verifier: Verifier, token: str) -> str:
    with pytest.raises(errors.Unauthenticated) as refused:
        verifier.verify(token)
    return refused.value.message


def test_expired_and_not_yet_valid_tokens_are_refused(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    verifier = Verifier(str(issuer.key))
    assert refusal(verifier, issuer.token(lifetime=-3600)) == "token expired"
    later = int(time.time()) + 3600
    assert refusal(verifier, issuer.token(nbf=later)) == "token not valid yet (nbf)"
    no_expiry = jwt.encode({"sub": "a"}, issuer._private, algorithm="ES256")
    assert "exp" in refusal(verifier, no_expiry)


def test_issuer_and_audience_are_checked_when_configured(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    verifier = Verifier(str(issuer.key), issuer="https://id.example", audience="orders")
    good = issuer.token(iss="https://id.example", aud="orders")
    assert verifier.verify(good).subject == "alice"
    wrong_audience = issuer.token(iss="https://id.example", aud="billing")
    assert refusal(verifier, wrong_audience) == "token not for audience 'orders'"
    wrong_issuer = issuer.token(iss="https://evil.example", aud="orders")
    assert refusal(verifier, wrong_issuer) == "token not from issuer 'https://id.example'"


def test_a_token_from_another_key_is_refused(tmp_path: Path) -> None:
    mine, theirs = Issuer(tmp_path / "mine"), Issuer(tmp_path / "theirs")
    assert "Signature verification failed" in refusal(Verifier(str(mine.key)), theirs.token())


def test_hs256_is_refused_unless_allowed(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path, "RS256")
    verifier = Verifier(str(issuer.key))
    # algorithm confusion: HMAC keyed with the public key's PEM text
    forged = _hs256({"sub": "mallory", "exp": int(time.time()) + 60}, issuer.key.read_bytes())
    assert refusal(verifier, forged) == "token signed with an algorithm not allowed"
    secret = tmp_path / "secret.jwks.json"
    shared = b"a shared secret of 32 bytes, ok!"
    k = base64.urlsafe_b64encode(shared).rstrip(b"=").decode()
    secret.write_text(json.dumps({"keys": [{"kty": "oct", "k": k, "kid": "s"}]}))
    with pytest.raises(AuthError, match=r"shared secret .HS256., refused unless"):
        Verifier(str(secret))
    hs = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, shared, "HS256", {"kid": "s"})
    assert Verifier(str(secret), allow_hs256=True).verify(hs).subject == "bob"


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match=r"MICRO_AUTH_PUBLIC_KEY=.*cannot read it"):
        Verifier(str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    with pytest.raises(AuthError, match="not a PEM public key or JWKS"):
        Verifier(str(garbage))


def test_rules_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            [
                {"resource": "echo.v1.Echo/Get", "scope": "public"},
                {"resource": "echo.v1.Echo/*", "scope": "admin", "priority": 10},
            ]
        )
    )
    rules = load_rules(str(path))
    assert rules == (Rule("echo.v1.Echo/Get", PUBLIC), Rule("echo.v1.Echo/*", "admin", priority=10))
    assert [r.resource for r in Auth(rules=rules).rules] == ["echo.v1.Echo/*", "echo.v1.Echo/Get"]
    path.write_text(json.dumps([{"resource": "x", "scope": ANY, "access": "maybe"}]))
    with pytest.raises(AuthError, match=r"MICRO_AUTH_RULES=.*: rule 1: .*grant or deny"):
        load_rules(str(path))
    path.write_text(json.dumps([{"resource": "x", "scopes": "a"}]))
    with pytest.raises(AuthError, match=r"rule 1: .*unexpected keyword argument 'scopes'"):
        load_rules(str(path))


def test_the_token_never_prints(tmp_path: Path) -> None:
    config = Config.from_env({"MICRO_AUTH_TOKEN": "s3cret.token.value"})
    assert config.auth_token == "s3cret.token.value"
    assert "s3cret" not in repr(config)


def _hs256(claims: dict[str, object], secret: bytes) -> str:
    """A token HMAC-signed by hand (PyJWT itself refuses a PEM key as a secret)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"
