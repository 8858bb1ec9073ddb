-- Every span ever received, raw attributes included. Replays insert identical rows with the same
-- (trace_id, span_id); ReplacingMergeTree collapses them and queries use FINAL for exact results.
-- Inserts also carry insert_deduplication_token (non_replicated_deduplication_window), so a retried
-- ambiguous insert is dropped by ClickHouse before it becomes a part.
-- Message content is kept once, in the raw attributes (gen_ai.input.messages, llm.input_messages.N..,
-- ...) or events; the normalized message list is derived from them in code when needed.
CREATE TABLE IF NOT EXISTS {db}.spans
(
    trace_id              String,
    span_id               String,
    parent_span_id        String,
    name                  String,
    otel_kind             LowCardinality(String),
    kind                  LowCardinality(String),
    operation             LowCardinality(String),
    convention            LowCardinality(String),
    service_name          LowCardinality(String),
    scope_name            LowCardinality(String),
    scope_version         LowCardinality(String),
    start_time            DateTime64(9, 'UTC'),
    end_time              DateTime64(9, 'UTC'),
    duration_ms           Float64,
    status_code           LowCardinality(String),
    status_message        String,
    error_type            String,
    exception_types       Array(String),
    exception_messages    Array(String),
    provider              LowCardinality(String),
    request_model         LowCardinality(String),
    response_model        LowCardinality(String),
    input_tokens          UInt64,
    output_tokens         UInt64,
    total_tokens          UInt64,
    cache_read_tokens     UInt64,
    cache_creation_tokens UInt64,
    reasoning_tokens      UInt64,
    finish_reasons        Array(LowCardinality(String)),
    tool_name             String,
    tool_call_id          String,
    tool_arguments        String,
    tool_result           String,
    conversation_id       String,
    user_id               String,
    agent_name            String,
    agent_id              String,
    agent_version         String,
    attributes            Map(String, String),  -- string values as-is; other OTLP types as JSON
    typed_attributes      Array(String),         -- keys of `attributes` whose value is JSON
    resource_attributes   Map(String, String),
    typed_resource_attributes Array(String),
    events                String,  -- JSON array of {name, time_ns, attributes}
    truncated_attributes  Array(String),
    is_late               UInt8,   -- arrived after its trace was completed
    kafka_topic           LowCardinality(String),
    kafka_partition       Int32,
    kafka_offset          Int64,
    ingested_at           DateTime64(3, 'UTC'),
    INDEX ix_ingested ingested_at TYPE minmax GRANULARITY 1,
    INDEX ix_conversation conversation_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(start_time)
ORDER BY (trace_id, span_id)
SETTINGS non_replicated_deduplication_window = 10000;
