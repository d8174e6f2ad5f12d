"""Bad TLS settings fail when the service is made, naming the variable and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from tls_support import Authority

import micro
from micro.config import Config, ConfigError
from micro.tls import Tls, TlsError


def test_the_variables_are_read(authority: Authority) -> None:
    pair = authority.issue("echo")
    env = {"MICRO_TLS_CERT": str(pair.cert), "MICRO_TLS_KEY": str(pair.key)}
    config = Config.from_env({**env, "MICRO_TLS_CA": str(authority.ca), "MICRO_REFLECTION": "0"})
    assert (config.tls_cert, config.tls_key, config.tls_ca) == (
        str(pair.cert),
        str(pair.key),
        str(authority.ca),
    )
    assert config.reflection is False
    with pytest.raises(ConfigError, match="MICRO_REFLECTION='maybe': expected 1 or 0"):
        Config.from_env({"MICRO_REFLECTION": "maybe"})


def test_a_missing_file_is_named(authority: Authority, tmp_path: Path) -> None:
    pair = authority.issue("echo")
    gone = tmp_path / "gone.pem"
    with pytest.raises(TlsError, match=f"MICRO_TLS_CERT={gone}: cannot read it: No such file"):
        Tls(str(gone), str(pair.key))
    with pytest.raises(TlsError, match=f"MICRO_TLS_CA={gone}: cannot read it"):
        Tls(ca=str(gone))


def test_a_key_that_is_not_the_certificates_is_refused(authority: Authority) -> None:
    one, other = authority.issue("echo"), authority.issue("other")
    with pytest.raises(TlsError, match=r"MICRO_TLS_KEY=.*does not match the certificate"):
        micro.Service(
            "echo", config=authority.config(None, tls_cert=str(one.cert), tls_key=str(other.key))
        )


def test_a_certificate_without_its_key_is_refused(authority: Authority) -> None:
    pair = authority.issue("echo")
    with pytest.raises(TlsError, match="MICRO_TLS_CERT is set but MICRO_TLS_KEY is not"):
        Tls(cert=str(pair.cert))


def test_an_unreadable_ca_is_named(authority: Authority, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsError, match=f"MICRO_TLS_CA={garbage}: no PEM certificate in it"):
        Tls(ca=str(garbage))


def test_an_expired_certificate_is_refused(authority: Authority) -> None:
    pair = authority.issue("echo", expired=True)
    with pytest.raises(TlsError, match=f"MICRO_TLS_CERT={pair.cert}: expired at"):
        Tls(str(pair.cert), str(pair.key))


def test_a_certificate_must_name_the_service(authority: Authority) -> None:
    pair = authority.issue("payments")
    with pytest.raises(TlsError, match="names payments, not the service 'echo'"):
        micro.Service("echo", config=authority.config(pair))


def test_a_service_with_a_ca_alone_is_refused(authority: Authority) -> None:
    with pytest.raises(TlsError, match="MICRO_TLS_CA is set but not MICRO_TLS_CERT"):
        micro.Service("echo", config=authority.config(None))
