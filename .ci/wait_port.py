"""Wait until something accepts TCP connections on 127.0.0.1:PORT, for at most
SECONDS; exit 1 if nothing does. ``python .ci/wait_port.py PORT [SECONDS]``"""

import socket
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
end = time.monotonic() + seconds
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        if time.monotonic() >= end:
            sys.exit(1)
        time.sleep(0.2)  # a server starting in another process: nothing to await
