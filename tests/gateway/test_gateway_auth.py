"""The gateway before a service that checks tokens: its reflection carries the
gateway's own token, and each call the caller's Authorization, never the gateway's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from gateway_support import CONFIG, Stack
from token_support import Issuer

import micro
from micro.gateway import Gateway


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(Path(tmp_path_factory.mktemp("issuer")))


@pytest.fixture(scope="module")
def guarded(issuer: Issuer) -> Iterator[Stack]:
    service = replace(CONFIG, auth_public_key=str(issuer.key))
    running = Stack(service=service, token=issuer.token("gateway", lifetime=3600))
    yield running
    running.close()


def test_calls_carry_the_callers_token_and_reflection_the_gateways(
    guarded: Stack, issuer: Issuer
) -> None:
    with httpx.Client(base_url=guarded.url, timeout=60.0) as http:
        refused = http.get("/v1/whoami")  # reflection succeeded: the route is known
        assert refused.status_code == 401
        assert refused.json()["code"] == 16
        token = issuer.token("ada")
        answer = http.get("/v1/whoami", headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["metadata"]["authorization"] == f"Bearer {token}"


def test_a_client_sending_its_own_token_is_refused(issuer: Issuer) -> None:
    client = micro.Client(config=replace(CONFIG, auth_token=issuer.token()))
    with pytest.raises(ValueError, match="every HTTP caller would act with its rights"):
        Gateway(client)
    client.close_sync()
