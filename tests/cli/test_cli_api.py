"""``micro api`` as a command: starts on the address given, says where, stops on
SIGTERM; bad settings are one line. (Calls through it: tests/gateway, and the
README's "Call it over HTTP", which runs it against real services.)"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cli_support import Running, micro
from tls_support import Authority

START = 60.0  # seconds a loaded machine may take to start Python, grpc and uvicorn


def test_it_serves_where_it_says_and_stops_on_sigterm() -> None:
    running = Running("api", "--address", "127.0.0.1:0", MICRO_REGISTRY="memory")
    try:
        found = running.wait_for(
            r"micro api: serving on (http://127\.0\.0\.1:\d+) \(docs at /docs\)", START
        )
        spec = httpx.get(f"{found[1]}/openapi.json", timeout=START)
        assert spec.status_code == 200
        assert spec.json()["paths"] == {}  # nothing registered in its own memory registry
        missing = httpx.post(f"{found[1]}/shop/Shop/Hello", json={}, timeout=START)
        assert missing.status_code == 404
        assert missing.json() == {"code": 5, "message": "no service 'shop' in the registry"}
    finally:
        code, _ = running.stop(START)
    assert code == 0


def test_with_a_certificate_it_serves_https(tmp_path: Path) -> None:
    """The services' TLS settings: MICRO_TLS_CERT/_KEY make the gateway serve HTTPS."""
    authority = Authority(tmp_path)
    pair = authority.issue("127.0.0.1")
    running = Running(
        "api",
        "--address",
        "127.0.0.1:0",
        MICRO_REGISTRY="memory",
        MICRO_TLS_CERT=str(pair.cert),
        MICRO_TLS_KEY=str(pair.key),
    )
    try:
        found = running.wait_for(r"micro api: serving on (https://127\.0\.0\.1:\d+) ", START)
        trust = ssl.create_default_context(cafile=str(authority.ca))
        spec = httpx.get(f"{found[1]}/openapi.json", verify=trust, timeout=START)
        assert spec.status_code == 200
        plain = found[1].replace("https://", "http://")
        with pytest.raises(httpx.RemoteProtocolError):  # nothing is answered in clear
            httpx.get(f"{plain}/openapi.json", timeout=START)
    finally:
        code, _ = running.stop(START)
    assert code == 0


def test_bad_settings_are_one_line() -> None:
    for args, cert, says in [
        (["--address", "nowhere"], "", "micro api: --address 'nowhere': expected HOST:PORT"),
        (["--max-body", "0"], "", "micro api: --max-body 0: expected a positive number of bytes"),
        ([], "cert.pem", "micro api: MICRO_TLS_CERT is set but MICRO_TLS_KEY is not"),
        (
            ["--address", "127.0.0.1:0", "--descriptor-set", "missing.binpb"],
            "",
            "micro api: descriptor set missing.binpb: No such file or directory",
        ),
    ]:
        done = micro("api", *args, MICRO_REGISTRY="memory", MICRO_TLS_CERT=cert)
        assert done.returncode == 1
        assert done.stderr.startswith(says), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_without_the_gateway_extra_it_names_the_extra() -> None:
    hide = "import sys; sys.modules['starlette'] = None; import micro.gateway"
    done = subprocess.run(
        [sys.executable, "-c", hide], capture_output=True, text=True, timeout=START
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == "ImportError: micro.gateway needs starlette: install `micro-grpc[gateway]`"
