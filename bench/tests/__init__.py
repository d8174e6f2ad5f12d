"""Tests of the benchmark's own machinery: ``.venv/bin/pytest -q bench/tests``."""
