"""Kafka authentication and TLS from the settings, for every Kafka client tracejudge opens.

Faust's app takes :func:`faust_credentials`; the plain aiokafka clients (topic admin, the skipped
offsets' reader, ``dlq`` tools) take :func:`client_options` as keyword arguments. Both come from
the same ``kafka_*`` settings, so a worker cannot talk to one part of a secured cluster in a way
it cannot talk to another:

* ``kafka_security_protocol``: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``;
* SASL: ``kafka_sasl_mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``) with
  ``kafka_sasl_username`` / ``kafka_sasl_password``;
* TLS: ``kafka_ssl_cafile`` (else the system's CAs), ``kafka_ssl_certfile`` / ``kafka_ssl_keyfile``
  for mutual TLS, ``kafka_ssl_check_hostname``.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context

from stream.config import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``SSL`` / ``SASL_SSL``, else None."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
    )
    if settings.kafka_ssl_cafile is None:
        context.load_default_certs()
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` / ``AIOKafkaAdminClient``."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol, "ssl_context": ssl_context(settings)}
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # Settings checks it
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password.get_secret_value())  # fmt: skip
    return options


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The ``broker_credentials`` of the Faust app (None: plaintext)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None
    credentials = faust.SASLCredentials(username=settings.kafka_sasl_username, ssl_context=context,
                                        password=settings.kafka_sasl_password.get_secret_value(),
                                        mechanism=settings.kafka_sasl_mechanism)  # fmt: skip
    return credentials
