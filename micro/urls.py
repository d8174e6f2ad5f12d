"""Addresses as micro prints them: credentials masked.

Every repr, log line and error that shows a backend's URL passes it through
``masked``, so ``nats://user:password@host`` is never printed.
"""

from __future__ import annotations

from collections.abc import Iterable


def masked(url: str) -> str:
    """``url`` with its password as ``***``; a user name without a password is masked
    whole (NATS reads it as a token). Everything up to the last ``@`` is credentials,
    whether or not the rest parses as a URL.

    >>> masked("nats://app:s3cret@127.0.0.1:4222")
    'nats://app:***@127.0.0.1:4222'
    """
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.rpartition("://")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon and user else "***"
    return f"{scheme}{sep}{shown}@{host}"


def masked_all(urls: Iterable[str]) -> str:
    """``urls`` masked, comma-separated (as ``MICRO_*_ADDRESS`` lists them)."""
    return ",".join(masked(url) for url in urls)
