"""The pytest plugin (the ``pytest11`` entry point ``micro``): fixtures only, so a
project that uses none of them sees no change. ``micro_harness`` (async tests, with
pytest-asyncio) and ``micro_sync_harness`` (plain tests) each give a test its own
harness, closed after it."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from micro.testing import Harness, SyncHarness


@pytest.fixture
def micro_sync_harness() -> Iterator[SyncHarness]:
    """A ``micro.testing.SyncHarness``: services for a plain test, blocking clients."""
    from micro.testing import SyncHarness

    with SyncHarness() as harness:
        yield harness


if importlib.util.find_spec("pytest_asyncio") is None:  # the async fixture needs it

    @pytest.fixture(name="micro_harness")
    def _needs_pytest_asyncio() -> None:
        pytest.fail("the micro_harness fixture needs pytest-asyncio: pip install pytest-asyncio")

else:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def micro_harness() -> AsyncIterator[Harness]:
        """A ``micro.testing.Harness``: services for an async test, typed clients,
        captured events."""
        from micro.testing import Harness

        async with Harness() as harness:
            yield harness
