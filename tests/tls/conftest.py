"""TLS tests: certificates made per test by a throwaway CA (tls_support.Authority)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_support import Echo  # first: generates echo.proto, puts it on the path
from tls_support import Authority

__all__ = ["Echo"]


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")
