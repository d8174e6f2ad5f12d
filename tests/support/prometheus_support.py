"""A Prometheus server of the test's own (Debian's ``prometheus``, which ``make
backends`` installs): loopback, a free port, a temporary store, scraping the targets
given; queried through its HTTP API, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_support import free_port

SCRAPE_INTERVAL = 0.2  # seconds: often, so a test waits for a scrape briefly


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as reply:
            return json.load(reply)

    def query(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's vector: each series' labels (sorted, without its name
        and the scrape's ``job`` and ``instance``) → its value."""
        answer = self.get("/api/v1/query", query=promql)
        assert answer["status"] == "success", answer
        found = {}
        for sample in answer["data"]["result"]:
            labels = sample["metric"]
            key = tuple(
                sorted(
                    (k, v) for k, v in labels.items() if k not in ("__name__", "job", "instance")
                )
            )
            found[key] = float(sample["value"][1])
        return found

    def scraped(self, after: float, timeout: float = 60.0) -> None:
        """Wait until every target was scraped successfully after ``after`` (epoch
        seconds), so what it served then is what queries see."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.get("/api/v1/targets")["data"]["activeTargets"]
            if targets and all(
                t["health"] == "up" and _epoch(t["lastScrape"]) > after for t in targets
            ):
                return
            assert time.monotonic() < deadline, f"not scraped since {after}: {targets}"
            time.sleep(SCRAPE_INTERVAL / 2)  # polling: Prometheus has no scrape event to await


def _epoch(rfc3339: str) -> float:
    """Prometheus' timestamps (nanoseconds, Z) as epoch seconds."""
    from datetime import datetime

    whole, _, fraction = rfc3339.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(whole + "+00:00").timestamp()
    return stamp + float(f"0.{fraction}" if fraction else 0)


@contextlib.contextmanager
def running(store: Path, targets: list[str]) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (host:port of ``/metrics``) until the block
    ends; skips, saying why, where the binary is missing (a failure under
    MICRO_REQUIRE_BACKENDS=1)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is missing (make backends installs Debian's package)")
    config = store / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": f"{int(SCRAPE_INTERVAL * 1000)}ms"},
                "scrape_configs": [
                    {
                        "job_name": "micro",
                        "scrape_interval": f"{int(SCRAPE_INTERVAL * 1000)}ms",
                        "static_configs": [{"targets": targets}],
                    }
                ],
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={store / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 60  # a loaded machine starts it slowly
        while True:
            assert proc.poll() is None, "prometheus exited at start"
            ready = f"{server.url}/-/ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(ready, timeout=2) as reply:
                if reply.status == 200:
                    break
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.05)  # polling a port that has no event to await
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
