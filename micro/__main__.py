"""``python -m micro``: the ``micro`` command."""

from micro.cli import main

main()
