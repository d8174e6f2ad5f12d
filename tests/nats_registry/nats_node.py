"""An Echo service registered in NATS, as its own process (see registry_processes):

python nats_node.py --name echo --address nats://127.0.0.1:4222  # prints {"address", "id"}
"""

from __future__ import annotations

import runtime_support  # noqa: F401  (generates echo.proto, puts it on the path)
from registry_processes import serve

from micro.registry.nats import NatsRegistry

if __name__ == "__main__":
    serve(lambda address: NatsRegistry([address]))
