"""A micro service against a plain grpc.aio client: gRPC's interop cases."""

from __future__ import annotations

import grpc.aio
import pytest
from interop_cases import DEADLINE_CASES, Grpc, implemented
from interop_support import in_fresh_process


@pytest.mark.parametrize("case", [c for c in implemented(Grpc) if c not in DEADLINE_CASES])
async def test_case(served: str, case: str) -> None:
    async with grpc.aio.insecure_channel(served) as channel:
        await getattr(Grpc(channel), case)()


@pytest.mark.parametrize("case", DEADLINE_CASES)
async def test_deadline_case_in_a_fresh_process(served: str, case: str) -> None:
    await in_fresh_process("grpc", served, case)
