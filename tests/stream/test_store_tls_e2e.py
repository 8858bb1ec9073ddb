"""ClickHouse over HTTPS with a password, end to end: a real worker on tansu stores into a
``tracejudge store-server`` that serves TLS with a certificate made by ``openssl`` and asks for a
password, through the DSN a ClickHouse Cloud or self-hosted TLS deployment gives it
(``https://user:password@host:port/?ca_cert=...``). The same client settings reach a ClickHouse
server; what is tested here is that the worker's DSN carries them: the scheme (TLS on any port),
the URL-quoted password, the private CA."""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from urllib3.exceptions import InsecureRequestWarning

from stream.demo.store_server_process import StoreServerProcess
from stream.store import connect
from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for
from tests.stream.kafka_gateway import make_certificate

PASSWORD = "p@ss:w/rd &more"  # every character a DSN must quote


@pytest.fixture
def tls_store(tmp_path: Path) -> Iterator[tuple[StoreServerProcess, Path]]:
    """(server, its certificate): HTTPS, user ``default`` with :data:`PASSWORD`."""
    (tmp_path / "tls").mkdir()
    cert, key = make_certificate(tmp_path / "tls")
    server = StoreServerProcess(tmp_path / "store", tls=(cert, key), password=PASSWORD)
    yield server, cert
    server.stop()


def dsn(server: StoreServerProcess, password: str = PASSWORD, scheme: str = "https", query: str = "") -> str:
    host = server.dsn.split("://", 1)[1]
    return f"{scheme}://default:{urllib.parse.quote(password, safe='')}@{host}/{query}"


def test_a_worker_stores_through_https_with_a_private_ca_and_a_password(
    tls_store: tuple[StoreServerProcess, Path], deployment: Callable[..., Deployment],
) -> None:  # fmt: skip
    server, cert = tls_store
    good = dsn(server, query=f"?ca_cert={cert}")
    d = deployment(partitions=1, clickhouse_dsn=good)
    worker = d.start_worker()
    rng = random.Random(3)
    traces = [genai_trace(rng, 4) for _ in range(3)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])
    client = connect(good)
    count = lambda table: int(client.command(f"SELECT count() FROM tracejudge.{table} FINAL"))  # noqa: E731
    assert wait_for(lambda: count("traces") == 3, 90), "traces not stored through https"
    assert count("spans") == 12 and worker.status()["counters"]["spans_stored"] == 12
    assert worker.proc.poll() is None
    client.close()
    log = server.log_path.read_text()
    assert "Authentication failed" not in log and "TLS with client" not in log  # every request authenticated


def test_the_store_refuses_a_wrong_password_an_untrusted_ca_and_plain_http(
    tls_store: tuple[StoreServerProcess, Path],
) -> None:  # fmt: skip
    server, cert = tls_store
    with pytest.raises(DatabaseError, match="516.*Authentication failed"):
        connect(dsn(server, "wrong", query=f"?ca_cert={cert}"))
    with pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        connect(dsn(server))  # the system's CAs do not know this certificate
    with pytest.raises(OperationalError):
        connect(dsn(server, scheme="http"))  # plain HTTP to a TLS port: the server drops it
    with pytest.warns(InsecureRequestWarning):  # what verify=false means: TLS without checking whose
        assert connect(dsn(server, query="?verify=false")).command("SELECT 1") == 1
    log = server.log_path.read_text()
    assert "TLSV1_ALERT_UNKNOWN_CA" in log and "HTTP_REQUEST" in log  # each refusal logged, one line each
    assert "Traceback" not in log


def test_a_worker_with_a_wrong_store_password_stops_with_the_reason(
    tls_store: tuple[StoreServerProcess, Path], deployment: Callable[..., Deployment],
) -> None:  # fmt: skip
    server, cert = tls_store
    d = deployment(partitions=1, clickhouse_dsn=dsn(server, "wrong", query=f"?ca_cert={cert}"))
    with pytest.raises(RuntimeError, match="worker exited"):
        d.start_worker()
    log = (d.data_dir / "worker-0.log").read_text()
    assert "Authentication failed" in log and "wrong" not in log.replace("password is incorrect", "")
