"""Middleware tests: echo.proto generated and on the path before test modules load."""

from __future__ import annotations

import runtime_support  # noqa: F401  # generates echo.proto, puts it on the path
