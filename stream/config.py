"""Worker configuration: environment (``TRACEJUDGE_*``) over an optional YAML file over defaults.

Every field can be set as ``TRACEJUDGE_<FIELD>`` (e.g. ``TRACEJUDGE_KAFKA_BOOTSTRAP``) or as a key of
the YAML file named by ``TRACEJUDGE_CONFIG`` / ``--config``. Invalid values fail at start with the
field named (see :func:`load_settings`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from stream.cluster import DEFAULT_REPLICA_PATH, ClusterSpec
from stream.event_loop import EventLoop

ENV_PREFIX = "TRACEJUDGE_"


RECORD_ALLOWANCE = 4096  # bytes a produced record takes beyond its value: key, headers, batch framing
REJOIN_ALLOWANCE_S = 10.0  # a group rejoin after a member's session expired, with margin


class ConfigError(Exception):
    """Configuration is invalid; the message names the offending field(s)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # --- where things are -------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset means `tracejudge demo` starts a local broker"
    )
    # Kafka authentication and TLS, for every client the worker and the CLI open (stream/kafka_auth.py)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for the brokers' certificates (default: system CAs)")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS), PEM")
    kafka_ssl_keyfile: Path | None = Field(None, description="its private key, PEM (if not in the certificate file)")
    kafka_ssl_check_hostname: bool = True
    clickhouse_dsn: str | None = Field(
        None, description="chdb:///abs/dir (embedded) or http(s)://user:pass@host:8123; default chdb://<data_dir>/clickhouse"
    )
    clickhouse_database: str = "tracejudge"
    clickhouse_cluster: str = Field(
        "", description="a cluster of the servers' remote_servers: sharded, replicated tables behind Distributed ones"
    )
    clickhouse_replicated: bool = Field(True, description="with clickhouse_cluster: Replicated*MergeTree tables")
    clickhouse_on_cluster: bool = Field(True, description="with clickhouse_cluster: DDL ON CLUSTER (else per server)")
    clickhouse_replica_path: str = Field(DEFAULT_REPLICA_PATH, description="with clickhouse_cluster: Keeper path")
    data_dir: Path = Field(Path("tracejudge-data"), description="embedded ClickHouse and worker state")

    # --- topics ----------------------------------------------------------------------------
    input_topic: str = "otlp_spans"
    dlq_topic: str = "otlp_spans.dlq"
    repartition_topic: str = "tracejudge.spans_by_trace"
    events_topic: str = Field("agent_events", description="product events (regenerate, thumbs_down, ...)")
    events_dlq_topic: str = "agent_events.dlq"
    action_join_window: float = Field(600.0, ge=0, description="seconds after a trace in which conversation events join it")
    judge_topic: str = Field("traces.to_judge", description="sampled traces, with the full assembled trace")
    input_encoding: Literal["auto", "otlp_proto", "otlp_json"] = "auto"
    consumer_group: str = "tracejudge"
    topic_partitions: int = Field(4, ge=1, le=1024, description="partitions for topics the worker creates")

    policy_file: Path | None = Field(None, description="policy YAML (gates, signals, sampling); default: built-in")
    judging_file: Path | None = Field(
        None, description="judging YAML (providers, tiers, rubrics, budget); unset = no judging agent"
    )
    judge_dlq_topic: str = Field("traces.to_judge.dlq", description="to_judge messages that cannot be decoded")
    max_repartition_message_bytes: int = Field(
        900_000, ge=10_000, description="a trace's part of an unkeyed input message larger than this goes to the "
        "repartition topic in several messages, each at most this size, its attribute values over max_attribute_bytes "
        "first cut to what the decoder keeps of them (a span larger alone is made to fit: its largest values cut, named "
        "in its truncated_attributes, then if need be its name and status message cut, its events and attributes "
        "dropped and counted); keep it "
        "below the broker's message.max.bytes: the worker's producer does not compress by default, so a compressed input "
        "message can hold a trace larger than the broker takes"
    )
    max_judge_message_bytes: int = Field(
        900_000, ge=10_000, description="a to_judge message larger than this carries its spans by reference "
        "(the judge loads them from ClickHouse); keep it below the broker's message.max.bytes"
    )

    # --- trace assembly (seconds) ----------------------------------------------------------
    decision_wait: float = Field(30.0, gt=0)
    max_trace_age: float = Field(600.0, gt=0)
    max_open_traces: int = Field(50_000, ge=1)
    max_spans_per_trace: int = Field(10_000, ge=1, description="spans held in memory per open trace")
    decided_cache_size: int = Field(200_000, ge=1, description="recently completed trace ids kept for late spans")
    tick_interval: float = Field(
        0.25, gt=0, description="how often open traces are checked for completion (a due trace waits up to this long)"
    )
    completion_chunk: int = Field(200, ge=1, description="traces decided and written per step of a tick")

    # --- input limits ----------------------------------------------------------------------
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_attribute_bytes: int = Field(256 * 1024, ge=64)
    oversize_attribute_policy: Literal["truncate", "dead_letter"] = "truncate"

    # --- batching / performance ------------------------------------------------------------
    batch_max_messages: int = Field(500, ge=1)
    insert_chunk_spans: int = Field(
        15_000, ge=100, description="spans per ClickHouse insert within a batch (a batch of many spans is "
        "decoded, held and stored in steps of this size). ClickHouse pays a fixed cost per insert and merges "
        "small parts later: on the benchmark input 14k-span inserts cost half the server CPU per span of "
        "5k-span ones (bench/store_cost.py); memory per batch grows with it (~2 KB per span)"
    )
    batch_within: float = Field(0.2, gt=0)
    kafka_fetch_max_wait: float = Field(
        0.1, gt=0, le=10, description="longest a fetch waits at the broker for data (Faust hard-codes 1.5 s; "
        "brokers that hold a fetch until then, such as tansu, added that to every hop)"
    )
    kafka_session_timeout: float = Field(
        10.0, ge=3, description="consumer group session timeout, seconds: how long the partitions of a "
        "crashed worker stall before another takes them over (keep it well below decision_wait)"
    )
    shutdown_batch_timeout: float = Field(
        20.0, gt=0, description="at shutdown, how long a batch in progress may take to be stored"
    )
    gap_reread_deadline: float = Field(
        300.0, gt=0, description="how long the worker keeps trying to read offsets its consumer skipped "
        "(stream/offset_gaps.py) before it gives up (see gap_unrecovered)"
    )
    gap_unrecovered: Literal["exit", "dead_letter"] = Field(
        "exit", description="when skipped offsets cannot be read again within gap_reread_deadline: exit "
        "(code 75) without committing past them, so a restart meets them again (nothing lost, but a broker "
        "that never serves them keeps the worker from going on), or dead_letter: send one record naming "
        "the offsets to the dead-letter topic, count them (consumer_unrecovered_offsets) and go on"
    )
    producer_max_request_bytes: int = Field(
        1 << 30, ge=1024, description="the largest record the worker's producer sends (the client-side check); "
        "the default leaves the limit to the broker. A dead letter refused as too large, by either, is sent "
        "again without the original message (stream/delivery.py)"
    )
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", description="record batch compression of what the worker produces (repartition, to_judge and dead-letter "
        "records): less network and broker disk for CPU on the worker (to_judge messages are JSON and shrink "
        "most). Input in any of these codecs is read whatever this is"
    )
    insert_retry_initial: float = Field(0.5, gt=0)
    insert_retry_max: float = Field(30.0, gt=0)

    # --- worker web API (status, read-only SQL while the embedded store is held) ------------
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    event_loop: EventLoop = Field(
        "uvloop", description="the worker's event loop: uvloop (libuv; less CPU per Kafka batch, HTTP "
        "call and timer) or the standard library's asyncio"
    )
    faults_file: Path | None = Field(
        None, description="fault tests only: JSON file that injects ClickHouse faults (stream/faults.py)"
    )

    # --- OpenTelemetry (stream/telemetry.py, stream/evaluation_events.py); /metrics is always on
    otel_exporter_otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP base URL for the worker's own metrics and spans; unset: "
        "OTEL_EXPORTER_OTLP_ENDPOINT, else off"
    )
    emit_evaluation_events: bool = Field(
        False, description="emit gen_ai.evaluation.result events into the judged traces (ok verdicts)"
    )
    evaluation_events_endpoint: str | None = Field(
        None, description="OTLP/HTTP base URL for evaluation events; default: otel_exporter_otlp_endpoint, "
        "then the standard OTEL_EXPORTER_OTLP_* variables"
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        v = v.removeprefix("kafka://")
        for part in v.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {part!r}")
        return v

    @field_validator("clickhouse_dsn")
    @classmethod
    def _check_dsn(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v

    @field_validator("otel_exporter_otlp_endpoint", "evaluation_events_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP/HTTP)")
        return v

    @model_validator(mode="after")
    def _check_times(self) -> Settings:
        if self.decision_wait > self.max_trace_age:
            raise ValueError("decision_wait must not exceed max_trace_age")
        self.cluster_spec  # noqa: B018 - a bad cluster name or replica path fails at start
        return self

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"kafka_security_protocol {self.kafka_security_protocol} needs kafka_sasl_username and "
                             "kafka_sasl_password")  # fmt: skip
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("kafka_ssl_keyfile needs kafka_ssl_certfile")
        return self

    @model_validator(mode="after")
    def _check_record_sizes(self) -> Settings:
        """A repartition or to_judge record over the producer's own limit is refused before it
        leaves, every time: it would hold its partition for good."""
        for name in ("max_repartition_message_bytes", "max_judge_message_bytes"):
            if getattr(self, name) > self.producer_max_request_bytes - RECORD_ALLOWANCE:
                raise ValueError(f"{name} {getattr(self, name)} must be at most producer_max_request_bytes "
                                 f"{self.producer_max_request_bytes} - {RECORD_ALLOWANCE} (a record's key, headers and "
                                 "framing): the producer refuses a larger record, and it would hold its partition")  # fmt: skip
        return self

    @property
    def cluster_spec(self) -> ClusterSpec | None:
        if not self.clickhouse_cluster:
            return None
        return ClusterSpec(self.clickhouse_cluster, self.clickhouse_replicated, self.clickhouse_on_cluster,
                           self.clickhouse_replica_path)  # fmt: skip

    @property
    def stall_risk(self) -> str | None:
        """Why traces split over several input partitions may complete without some spans: after a
        worker crash its partitions stall for the session timeout plus a rejoin (measured ~3-6 s),
        and a part waiting there looks like quiet time to the trace's owner."""
        stall = self.kafka_session_timeout + REJOIN_ALLOWANCE_S
        if self.decision_wait >= stall:
            return None
        return (f"decision_wait {self.decision_wait:g}s < kafka_session_timeout {self.kafka_session_timeout:g}s + "
                f"{REJOIN_ALLOWANCE_S:g}s rejoin: after a worker crash, traces split over several input "
                "partitions may complete before all their spans arrive (they are stored as late spans)")

    @property
    def resolved_clickhouse_dsn(self) -> str:
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.resolved_clickhouse_dsn.startswith("chdb://")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings; raise :class:`ConfigError` naming every invalid field."""
    source = "--config"
    if config_file is None and os.environ.get(ENV_PREFIX + "CONFIG"):
        config_file, source = os.environ[ENV_PREFIX + "CONFIG"], ENV_PREFIX + "CONFIG"
    cls = Settings
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from {source})")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(yaml_file=str(path))

        cls = FileSettings
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(settings)"
            env = ENV_PREFIX + field.upper() if err["loc"] else ""
            where = f"{field} ({env})" if env else field
            problems.append(f"  {where}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from None
    except Exception as exc:  # e.g. YAML syntax errors from the file source
        raise ConfigError(f"invalid configuration: {exc}") from None
