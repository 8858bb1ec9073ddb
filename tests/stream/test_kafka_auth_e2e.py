"""A worker against a secured Kafka: TLS and SASL (PLAIN, SCRAM), end to end. The broker is tansu behind
:class:`tests.stream.kafka_gateway.KafkaGateway`, which every connection after bootstrap goes
through (tansu advertises the gateway's port): a client that does not speak TLS, or does not
authenticate, gets nothing. Before stream/kafka_auth.py the worker had no way to do either."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.demo.broker import LocalBroker
from stream.dlq_replay import scan
from stream.kafka_auth import client_options
from stream.topics import ensure_topics, topic_partitions
from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, free_port, produce_records, wait_for
from tests.stream.kafka_gateway import KafkaGateway, make_certificate

USER, PASSWORD = "tracejudge", "s3cret-pw"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[LocalBroker, KafkaGateway, Path]]:
    """(tansu, its TLS + SASL gateway, the gateway's certificate)."""
    try:
        cert, key = make_certificate(tmp_path)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no certificate: {exc}")
    gateway_port = free_port()
    with LocalBroker(tmp_path / "tansu", advertised_port=gateway_port) as broker:
        with KafkaGateway(gateway_port, broker.port, certificate=(cert, key), users={USER: PASSWORD},
                          mechanisms=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")) as gateway:  # fmt: skip
            yield broker, gateway, cert


def sasl_ssl(gateway: KafkaGateway, cert: Path, password: str = PASSWORD, **more: Any) -> dict[str, Any]:
    return {"kafka_bootstrap": f"127.0.0.1:{gateway.port}", "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_username": USER, "kafka_sasl_password": password, "kafka_ssl_cafile": str(cert), **more}  # fmt: skip


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_a_worker_on_a_sasl_ssl_cluster_reads_stores_and_dead_letters(
    secured: tuple[LocalBroker, KafkaGateway, Path], tmp_path: Path, mechanism: str
) -> None:
    broker, gateway, cert = secured
    options = sasl_ssl(gateway, cert, kafka_sasl_mechanism=mechanism)
    settings = Settings(**options)
    topic = "secured.in"
    asyncio.run(ensure_topics(settings.kafka_bootstrap or "", {topic: 1}, client=client_options(settings)))
    d = Deployment(broker, topic, tmp_path / "data", **options)
    worker = d.start_worker()
    try:
        rng = random.Random(9)
        keyed, u, v = (genai_trace(rng, 3) for _ in range(3))
        messages = [(keyed[0].trace_id.hex().encode(), proto(keyed)), (None, proto(u + v)), (b"bad", b"\x00not otlp")]
        asyncio.run(produce_records(settings.kafka_bootstrap or "", topic, messages, **client_options(settings)))
        stored = lambda sql: int(worker.sql(sql)[0][0])  # noqa: E731
        assert wait_for(lambda: stored("SELECT count() FROM tracejudge.traces FINAL") >= 3, 90), "not stored"
        assert stored("SELECT count() FROM tracejudge.spans FINAL") == 9
        counters = worker.status()["counters"]
        assert counters["repartitioned_messages"] == 1 and counters["dead_lettered"] == 1

        async def dead_letters() -> list[Any]:
            return [x async for x in scan(settings.kafka_bootstrap or "", d.dlq_topic, client_options(settings))]

        (letter,) = asyncio.run(dead_letters())  # the dlq tools read through the same credentials
        assert letter.reason == "undecodable" and letter.value == b"\x00not otlp"
    finally:
        d.stop_all()
    assert gateway.seen[f"authenticated:{USER}"] >= 3  # admin, consumer, producer at least
    assert gateway.seen["unauthenticated"] == 0 and gateway.seen[f"refused:{USER}"] == 0
    asked = {k for k in gateway.seen if k.startswith("mechanism:")}
    assert asked == {f"mechanism:{mechanism}"}  # every client, Faust's too, used the one configured


def test_a_wrong_password_or_an_unknown_ca_is_refused(secured: tuple[LocalBroker, KafkaGateway, Path],
                                                      tmp_path: Path) -> None:  # fmt: skip
    _, gateway, cert = secured
    wrong = Settings(**sasl_ssl(gateway, cert, password="nope"))
    with pytest.raises(KafkaError):
        asyncio.run(topic_partitions(wrong.kafka_bootstrap or "", "any", timeout=5, client=client_options(wrong)))
    assert gateway.seen[f"refused:{USER}"] >= 1 and gateway.seen[f"authenticated:{USER}"] == 0
    other_ca, _ = make_certificate(tmp_path)  # a certificate the gateway's is not signed by
    untrusted = Settings(**sasl_ssl(gateway, other_ca))
    with pytest.raises(KafkaError):
        asyncio.run(topic_partitions(untrusted.kafka_bootstrap or "", "any", timeout=5, client=client_options(untrusted)))
    plain = Settings(kafka_bootstrap=f"127.0.0.1:{gateway.port}")  # no TLS at all
    with pytest.raises(KafkaError):
        asyncio.run(topic_partitions(plain.kafka_bootstrap or "", "any", timeout=5, client=client_options(plain)))
    assert gateway.seen[f"authenticated:{USER}"] == 0


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_authenticates_both_ways_and_refuses_a_wrong_password(
    secured: tuple[LocalBroker, KafkaGateway, Path], mechanism: str
) -> None:
    """The gateway checks the client's proof against the password and the client checks the
    gateway's signature (aiokafka fails the connection on a wrong one): both sides derived the
    same salted password, so the settings reach aiokafka's SCRAM as a broker expects them."""
    _, gateway, cert = secured
    good = Settings(**sasl_ssl(gateway, cert, kafka_sasl_mechanism=mechanism))
    topic = f"scram.{mechanism.lower()}"
    asyncio.run(ensure_topics(good.kafka_bootstrap or "", {topic: 1}, client=client_options(good)))
    asyncio.run(produce_records(good.kafka_bootstrap or "", topic, [(None, b"x")], **client_options(good)))
    assert asyncio.run(topic_partitions(good.kafka_bootstrap or "", topic, timeout=5, client=client_options(good))) == 1
    assert gateway.seen[f"authenticated:{USER}"] >= 3 and gateway.seen[f"refused:{USER}"] == 0
    assert {k for k in gateway.seen if k.startswith("mechanism:")} == {f"mechanism:{mechanism}"}
    wrong = Settings(**sasl_ssl(gateway, cert, password="nope", kafka_sasl_mechanism=mechanism))
    with pytest.raises(KafkaError):
        asyncio.run(topic_partitions(wrong.kafka_bootstrap or "", topic, timeout=5, client=client_options(wrong)))
    assert gateway.seen[f"refused:{USER}"] >= 1
