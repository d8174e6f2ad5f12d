"""micro.testing's own tests: the harness, fakes, captured events, direct calls and
the pytest plugin, on the echo service of tests/support."""

from __future__ import annotations

import runtime_support  # noqa: F401  generates echo.proto and puts it on the path
