"""Auth tests: token issuers made per test (token_support.Issuer)."""

from __future__ import annotations

from runtime_support import Echo  # first: generates echo.proto, puts it on the path

__all__ = ["Echo"]
