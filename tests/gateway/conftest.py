"""Gateway tests: one Library service and one gateway (uvicorn on loopback) per module."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_support import DESCRIPTOR_SET, Stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    running = Stack(max_body=64 * 1024, descriptor_sets=[DESCRIPTOR_SET])
    yield running
    running.close()


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    # 60 s: a call on a loaded machine; the gateway's own bounds are the calls' deadlines
    with httpx.Client(base_url=stack.url, timeout=60.0) as client:
        yield client
