"""The generated greeter modules (examples/gen, written by ``make gen``).

They are imported by name at run time rather than statically: examples/gen is not a
package mypy or the interpreter knows about, and the benchmark must not depend on
anything but the generated code users get.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType

from bench.environment import GEN

SAY_HELLO = "/greeter.v1.Greeter/SayHello"
LOTS_OF_REPLIES = "/greeter.v1.Greeter/LotsOfReplies"


@dataclass(frozen=True)
class Greeter:
    pb2: ModuleType  # greeter_pb2: HelloRequest, HelloReply
    micro: ModuleType  # greeter_micro: GreeterHandler, GreeterClient, GreeterSyncClient


def load() -> Greeter:
    if not (GEN / "greeter" / "v1" / "greeter_micro.py").exists():
        raise SystemExit(f"bench: {GEN} has no generated greeter; run `make gen`")
    if str(GEN) not in sys.path:
        sys.path.insert(0, str(GEN))
    return Greeter(
        pb2=importlib.import_module("greeter.v1.greeter_pb2"),
        micro=importlib.import_module("greeter.v1.greeter_micro"),
    )
