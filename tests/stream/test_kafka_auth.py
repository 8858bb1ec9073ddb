"""stream/kafka_auth.py: the Kafka security settings, checked at start, and what the clients get."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from stream.config import Settings
from stream.kafka_auth import client_options, faust_credentials


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    s = Settings()
    assert client_options(s) == {} and faust_credentials(s) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_gives_every_client_the_same_credentials(mechanism: str) -> None:
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
                 kafka_sasl_username="u", kafka_sasl_password="pw-9c1f")  # fmt: skip
    options = client_options(s)
    assert options == {"security_protocol": "SASL_PLAINTEXT", "ssl_context": None, "sasl_mechanism": mechanism,
                       "sasl_plain_username": "u", "sasl_plain_password": "pw-9c1f"}  # fmt: skip
    assert credentials_to_aiokafka_auth(faust_credentials(s)) == options  # what Faust hands its clients
    assert "pw-9c1f" not in repr(s) and "pw-9c1f" not in str(s.model_dump())  # a secret in logs and dumps


def test_ssl_uses_the_given_ca_and_sasl_ssl_both(tmp_path: Path) -> None:
    from tests.stream.kafka_gateway import make_certificate

    try:
        cert, key = make_certificate(tmp_path)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no certificate: {exc}")
    s = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=cert, kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    options = client_options(s)
    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL" and isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "localhost"),),)]
    assert isinstance(faust_credentials(s), faust.SSLCredentials)
    both = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="p",
                    kafka_ssl_cafile=cert, kafka_ssl_check_hostname=False)  # fmt: skip
    auth = credentials_to_aiokafka_auth(faust_credentials(both))
    assert auth["security_protocol"] == "SASL_SSL" and auth["ssl_context"].check_hostname is False
    assert client_options(both)["security_protocol"] == "SASL_SSL"


@pytest.mark.parametrize(("fields", "message"), [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "needs kafka_sasl_username and kafka_sasl_password"),
    ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "kafka_ssl_cafile: no such file"),
    ({"kafka_ssl_keyfile": __file__}, "kafka_ssl_keyfile needs kafka_ssl_certfile"),
    ({"kafka_security_protocol": "SASL_TLS"}, "kafka_security_protocol"),
])  # fmt: skip
def test_a_bad_security_setting_fails_at_start_naming_it(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)
