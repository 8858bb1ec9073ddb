"""Settings: env over YAML over defaults; invalid configuration names the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("TRACEJUDGE_"):
            monkeypatch.delenv(k)


def test_defaults() -> None:
    s = load_settings()
    assert (s.input_topic, s.dlq_topic, s.decision_wait, s.max_trace_age) == ("otlp_spans", "otlp_spans.dlq", 30.0, 600.0)
    assert s.kafka_bootstrap is None and s.embedded
    assert s.resolved_clickhouse_dsn == f"chdb://{(Path('tracejudge-data') / 'clickhouse').resolve()}"


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "tj.yaml"
    cfg.write_text("input_topic: from_yaml\ndecision_wait: 12\nkafka_bootstrap: kafka:9092\n")
    monkeypatch.setenv("TRACEJUDGE_DECISION_WAIT", "7.5")
    s = load_settings(cfg)
    assert (s.input_topic, s.decision_wait, s.kafka_bootstrap) == ("from_yaml", 7.5, "kafka:9092")


@pytest.mark.parametrize(
    "env,field",
    [
        ({"TRACEJUDGE_DECISION_WAIT": "-1"}, "decision_wait (TRACEJUDGE_DECISION_WAIT)"),
        ({"TRACEJUDGE_KAFKA_BOOTSTRAP": "no-port"}, "kafka_bootstrap (TRACEJUDGE_KAFKA_BOOTSTRAP)"),
        ({"TRACEJUDGE_CLICKHOUSE_DSN": "mysql://x"}, "clickhouse_dsn (TRACEJUDGE_CLICKHOUSE_DSN)"),
        ({"TRACEJUDGE_INPUT_ENCODING": "avro"}, "input_encoding (TRACEJUDGE_INPUT_ENCODING)"),
        ({"TRACEJUDGE_DECISION_WAIT": "700"}, "decision_wait must not exceed max_trace_age"),
    ],
    ids=["negative-wait", "bootstrap", "dsn", "encoding", "wait-over-age"],
)
def test_invalid_env_names_the_field(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace(")", r"\)")):
        load_settings()


def test_unknown_yaml_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "tj.yaml"
    cfg.write_text("input_topik: typo\n")
    with pytest.raises(ConfigError, match="input_topik"):
        load_settings(cfg)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_a_decision_wait_shorter_than_a_crash_stall_is_flagged() -> None:
    assert load_settings().stall_risk is None  # defaults: 30 s wait vs 10 s session + rejoin
    risk = load_settings(decision_wait=5.0, kafka_session_timeout=10.0).stall_risk
    assert risk is not None and "decision_wait 5s < kafka_session_timeout 10s" in risk


def test_a_record_the_producer_itself_would_refuse_is_a_configuration_error() -> None:
    """A repartition or to_judge record over ``producer_max_request_bytes`` is refused before it
    leaves, every time, and holds its partition: the settings that size them must leave room."""
    with pytest.raises(ConfigError, match="max_repartition_message_bytes 900000 must be at most producer_max_request_"):
        load_settings(producer_max_request_bytes=65_536)
    with pytest.raises(ConfigError, match="max_judge_message_bytes 62000 must be at most producer_max_request_bytes "
                       "65536 - 4096"):  # fmt: skip
        load_settings(producer_max_request_bytes=65_536, max_repartition_message_bytes=60_000,
                      max_judge_message_bytes=62_000)  # fmt: skip
    s = load_settings(producer_max_request_bytes=65_536, max_repartition_message_bytes=61_440,
                      max_judge_message_bytes=61_440)  # fmt: skip
    assert s.max_judge_message_bytes + 4096 == s.producer_max_request_bytes
