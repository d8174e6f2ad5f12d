"""Bearer tokens (JWT) and rules: who may call what, checked on the server; the
service's own token on its outgoing calls.

A server with a key (``MICRO_AUTH_PUBLIC_KEY``: a PEM public key or a JWKS file)
verifies the ``authorization: Bearer <JWT>`` of each call: signature (RS256, ES256 or
EdDSA; HS256 only when allowed), expiry and not-before always, issuer and audience
when configured. Rules then say which scopes may call which methods, as in Go
Micro's auth: the first rule by priority that matches the method and admits the
caller decides. Without rules every method needs a valid token (health answers
everyone: it is not a handler).

    auth = Auth(key="jwks.json", rules=[Rule("greeter.v1.Greeter/SayHello", PUBLIC)])
    svc = micro.Service("greeter", middleware=[auth])

Resources are method paths without the leading slash, ``pkg.Service/Method``,
matched as shell patterns (``greeter.v1.Greeter/*``, ``*``). A rule's scope is
``PUBLIC`` (anyone, no token needed), ``ANY`` (any valid token) or a scope the token
must carry (its ``scope`` claim, space-separated, or ``scp``/``scopes`` lists).

Outgoing calls carry the service's own token (``MICRO_AUTH_TOKEN`` or a callable
that returns the current one), never the token of the call being served, unless
``forward`` names the called service.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from micro import errors
from micro.config import Config, ConfigError
from micro.context import Identity, current
from micro.middleware.base import ClientCall, Ending, Middleware, ServerCall

try:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
except ImportError:  # pragma: no cover - the extra is installed in development
    raise ImportError("micro.middleware.auth needs PyJWT: install micro-grpc[auth]") from None

PUBLIC = "public"
"""A rule scope: anyone may call, with or without a token."""
ANY = "*"
"""A rule scope: any caller with a valid token."""
LEEWAY = 30.0  # seconds of clock skew allowed on exp and nbf
VERIFIED = 1024  # tokens kept verified (the oldest forgotten first): callers at once
_ASYMMETRIC = ("RS256", "ES256", "EdDSA")


class AuthError(ConfigError):
    """Auth settings that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class Rule:
    """``resource`` (a ``pkg.Service/Method`` pattern) may be called by callers
    ``scope`` admits (``PUBLIC``, ``ANY`` or a scope), or not (``access="deny"``);
    higher ``priority`` first, ties in the order given."""

    resource: str
    scope: str = ANY
    access: Literal["grant", "deny"] = "grant"
    priority: int = 0

    def __post_init__(self) -> None:
        if self.access not in ("grant", "deny"):
            raise AuthError(f"rule {self.resource!r}: access must be grant or deny")
        if not self.resource or not self.scope:
            raise AuthError(f"rule {self.resource!r}: needs a resource and a scope")

    def admits(self, identity: Identity | None) -> bool:
        if self.scope == PUBLIC:
            return True
        if identity is None or identity.subject is None:
            return False
        return self.scope == ANY or self.scope in identity.scopes


def load_rules(path: str) -> tuple[Rule, ...]:
    """Rules from a JSON file: a list of ``{"resource", "scope", "access", "priority"}``
    (``MICRO_AUTH_RULES``); a bad file fails naming the variable and the entry."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as e:
        raise AuthError(f"MICRO_AUTH_RULES={path}: cannot read rules: {e}") from None
    if not isinstance(entries, list):
        raise AuthError(f"MICRO_AUTH_RULES={path}: expected a JSON list of rules")
    rules = []
    for number, entry in enumerate(entries, 1):
        try:
            if not isinstance(entry, dict):
                raise TypeError("not an object")
            rules.append(Rule(**entry))
        except (TypeError, AuthError) as e:
            raise AuthError(f"MICRO_AUTH_RULES={path}: rule {number}: {e}") from None
    return tuple(rules)


class Verifier:
    """Checks bearer tokens against a public key or a JWKS file (``path``)."""

    def __init__(
        self,
        path: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        allow_hs256: bool = False,
    ) -> None:
        self.issuer, self.audience = issuer, audience
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise AuthError(f"MICRO_AUTH_PUBLIC_KEY={path}: cannot read it: {e.strerror}") from None
        self._keys = _keys(path, data, allow_hs256)
        # Tokens verified, until their expiry: a caller sends the same one on every
        # call, and a signature check costs more than the rest of a call.
        self._verified: collections.OrderedDict[str, tuple[Identity, float]] = (
            collections.OrderedDict()
        )

    def verify(self, token: str) -> Identity:
        """The caller the token proves, or ``errors.Unauthenticated`` saying why not."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() <= known[1] + LEEWAY:
                return known[0]
            del self._verified[token]
        identity = self._check(token)
        self._verified[token] = (identity, float(identity.claims["exp"]))
        if len(self._verified) > VERIFIED:
            self._verified.popitem(last=False)
        return identity

    def _check(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            found = self._keys.get(kid) or self._keys.get(None)  # a PEM key has no id
            if found is None:
                raise errors.Unauthenticated(f"token signed by an unknown key (kid {kid!r})")
            algorithms, key = found
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise errors.Unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise errors.Unauthenticated("token not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise errors.Unauthenticated(f"token not for audience {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise errors.Unauthenticated(f"token not from issuer {self.issuer!r}") from None
        except jwt.InvalidAlgorithmError:
            raise errors.Unauthenticated("token signed with an algorithm not allowed") from None
        except jwt.InvalidTokenError as e:
            raise errors.Unauthenticated(f"invalid token: {e}") from None
        subject = claims.get("sub")
        return Identity(str(subject) if subject is not None else "", _scopes(claims), claims)


class Auth(Middleware):
    """Server: verifies tokens and applies ``rules`` (needs ``key``). Client: sends
    ``token`` (a string or a callable returning the current one) on every call,
    or the inbound call's own token to services matching ``forward``."""

    def __init__(
        self,
        key: str | None = None,
        *,
        rules: Iterable[Rule] = (),
        issuer: str | None = None,
        audience: str | None = None,
        allow_hs256: bool = False,
        token: str | Callable[[], str] | None = None,
        forward: Sequence[str] = (),
    ) -> None:
        self._verifier = (
            Verifier(key, issuer=issuer, audience=audience, allow_hs256=allow_hs256)
            if key is not None
            else None
        )
        given = list(rules) or [Rule("*", ANY)]
        self.rules = tuple(sorted(given, key=lambda r: -r.priority))  # stable: ties keep order
        self._token = token
        self._forward = tuple(forward)

    @classmethod
    def from_config(cls, config: Config) -> Auth:
        """The auth ``MICRO_AUTH_*`` asks for."""
        rules = load_rules(config.auth_rules) if config.auth_rules else ()
        return cls(
            config.auth_public_key,
            rules=rules,
            issuer=config.auth_issuer,
            audience=config.auth_audience,
            allow_hs256=config.auth_allow_hs256,
            token=config.auth_token,
        )

    def handle(self, call: ServerCall) -> Ending | None:
        if self._verifier is not None:
            identity = self.check(call.method, call.ctx.metadata)
            if identity is not None:
                call.ctx.identity = identity.with_names(call.ctx.identity.names)
        return None

    def check(self, method: str, metadata: Mapping[str, str | bytes]) -> Identity | None:
        """The caller of ``method`` (``/pkg.Service/Method``) by its metadata, if the
        rules admit it: None for one without a token that a public rule admits. Raises
        ``errors.Unauthenticated`` (no token, or a bad one) or
        ``errors.PermissionDenied`` (a valid token the rules do not admit)."""
        if self._verifier is None:
            return None
        credentials = metadata.get("authorization")
        identity = None
        if credentials is not None:
            scheme, _, token = str(credentials).partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise errors.Unauthenticated(f"{method}: authorization is not a bearer token")
            identity = self._verifier.verify(token)
        resource = method.lstrip("/")
        for rule in self.rules:
            if fnmatch.fnmatchcase(resource, rule.resource) and rule.admits(identity):
                if rule.access == "grant":
                    return identity
                break
        if identity is None:
            raise errors.Unauthenticated(f"{method}: a bearer token is required")
        raise errors.PermissionDenied(
            f"{method}: {identity.subject or 'the caller'} may not call it"
        )

    def call(self, call: ClientCall) -> Ending | None:
        token = self._outgoing(call.service)
        if token is not None:
            call.metadata.append(("authorization", f"Bearer {token}"))
        return None

    def _outgoing(self, service: str) -> str | None:
        if any(fnmatch.fnmatchcase(service, pattern) for pattern in self._forward):
            inbound = current()
            forwarded = None if inbound is None else inbound.metadata.get("authorization")
            if forwarded is not None:
                return str(forwarded).partition(" ")[2]
        if callable(self._token):
            return self._token()
        return self._token


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return tuple(scope.split())
    for name in ("scp", "scopes"):
        listed = claims.get(name)
        if isinstance(listed, str):
            return tuple(listed.split())
        if isinstance(listed, list):
            return tuple(str(s) for s in listed)
    return ()


_Keys = dict[str | None, tuple[list[str], Any]]


def _keys(path: str, data: bytes, allow_hs256: bool) -> _Keys:
    """Key id → (the algorithms its type allows, the key); a PEM key has no id. The
    algorithm comes from the key, never from a token (no algorithm confusion)."""
    if data.lstrip().startswith(b"{"):
        try:
            jwks = jwt.PyJWKSet.from_json(data.decode())
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError) as e:
            raise AuthError(f"MICRO_AUTH_PUBLIC_KEY={path}: not a usable JWKS: {e}") from None
        keys: _Keys = {}
        for jwk in jwks.keys:
            if jwk.key_type == "oct" and not allow_hs256:
                raise AuthError(
                    f"MICRO_AUTH_PUBLIC_KEY={path}: key {jwk.key_id!r} is a shared secret "
                    "(HS256), refused unless MICRO_AUTH_ALLOW_HS256=1"
                )
            keys[jwk.key_id] = ([jwk.algorithm_name], jwk.key)
        return keys
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise AuthError(
            f"MICRO_AUTH_PUBLIC_KEY={path}: not a PEM public key or JWKS ({e})"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        return {None: (["RS256"], key)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {None: (["ES256"], key)}
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {None: (["EdDSA"], key)}
    raise AuthError(f"MICRO_AUTH_PUBLIC_KEY={path}: a {type(key).__name__}; use {_ASYMMETRIC}")
