"""A plain grpcio server against micro's async and blocking clients: gRPC's interop
cases."""

from __future__ import annotations

import asyncio

import pytest
from interop_cases import DEADLINE_CASES, Micro, MicroSync, implemented
from interop_support import in_fresh_process

import micro


@pytest.mark.parametrize("case", [c for c in implemented(Micro) if c not in DEADLINE_CASES])
async def test_async_client(plain: str, case: str) -> None:
    async with micro.Client() as client:
        await getattr(Micro(client, plain), case)()


@pytest.mark.parametrize("case", [c for c in implemented(MicroSync) if c not in DEADLINE_CASES])
async def test_blocking_client(plain: str, case: str) -> None:
    def run() -> None:
        with micro.Client() as client:
            getattr(MicroSync(client, plain), case)()

    await asyncio.to_thread(run)


@pytest.mark.parametrize("kind", ["micro", "micro-sync"])
@pytest.mark.parametrize("case", DEADLINE_CASES)
async def test_deadline_case_in_a_fresh_process(plain: str, kind: str, case: str) -> None:
    await in_fresh_process(kind, plain, case)
