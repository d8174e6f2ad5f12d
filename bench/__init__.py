"""Benchmarks of micro-grpc against plain grpcio, run by ``make bench``.

``python -m bench`` runs every section; ``python -m bench codegen`` or
``python -m bench rpc`` runs one; ``--quick`` is a short smoke run. Results go to
stdout (a table), ``bench/results.json`` and ``bench/results.png``.

The machine is assumed noisy: every figure is measured against its baseline in the
same run, in interleaved rounds, and reported as a median with its spread and the
ratio to the baseline. Absolute numbers only indicate the order of magnitude.
"""
