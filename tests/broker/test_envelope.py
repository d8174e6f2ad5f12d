"""Envelope ids: cheap, 32 hex digits, never repeated by a forked child."""

from __future__ import annotations

import subprocess
import sys

from micro.broker.base import Envelope, new_id

_FORKED = """
import os, sys
from micro.broker.base import new_id
new_id()
read, write = os.pipe()
if os.fork() == 0:
    os.write(write, new_id().encode())
    os._exit(0)
os.wait()
print(os.read(read, 64).decode(), new_id())
"""


def test_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {Envelope("t", b"", "application/protobuf").id for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(new_id()) == 32


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FORKED], capture_output=True, text=True, timeout=30, check=True
    )
    child, parent = result.stdout.split()
    assert len(child) == len(parent) == 32
    assert child != parent
