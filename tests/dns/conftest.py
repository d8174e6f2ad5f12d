"""A real DNS server per test: dnsmasq on a free loopback UDP port, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from dns_support import DNSMASQ, Dnsmasq, Start


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Start]:
    """Starts dnsmasq processes; each is stopped (by its PID) after the test."""
    if DNSMASQ is None:
        pytest.skip("dnsmasq not installed (apt-get install dnsmasq-base)")
    started: list[Dnsmasq] = []

    def start(hosts: Mapping[str, Sequence[str]] | None = None, srv: Sequence[str] = ()) -> Dnsmasq:
        workdir = tmp_path / f"dns{len(started)}"
        workdir.mkdir()
        server = Dnsmasq(workdir, hosts or {}, srv)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
