"""An Echo service registered in etcd, as its own process (see registry_processes):

python etcd_node.py --name echo --address 127.0.0.1:2379  # prints {"address", "id"}
"""

from __future__ import annotations

import runtime_support  # noqa: F401  (generates echo.proto, puts it on the path)
from registry_processes import serve

from micro.registry.etcd import EtcdRegistry

if __name__ == "__main__":
    serve(lambda address: EtcdRegistry([address]))
