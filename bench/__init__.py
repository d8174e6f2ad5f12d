"""Benchmarks of micro-grpc against its baselines, run by ``make bench``.

``python -m bench`` runs every section (codegen, rpc, overload, scale, registry,
broker);
``python -m bench rpc scale`` runs those; ``--quick`` is a short smoke run of each.
Results go to stdout (a table), ``bench/results.json`` (every figure with its
spread) and ``bench/results.png`` (the chart); both are left out of git.

The machine is assumed noisy: every figure is measured against its baseline in the
same run, in interleaved rounds, and reported as a median with its spread and the
ratio to the baseline. Absolute numbers only indicate the order of magnitude.
"""
