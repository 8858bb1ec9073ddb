-- One row per assembled trace. ORDER BY trace_id with no time partition, so FINAL collapses a
-- re-completed trace even if its span set (and so its start time) differs; the newest wins.
CREATE TABLE IF NOT EXISTS {db}.traces
(
    trace_id          String,
    service_name      LowCardinality(String),
    agent_name        String,
    agent_version     String,
    conversation_id   String,
    user_id           String,
    root_span_id      String,
    root_name         String,
    start_time        DateTime64(9, 'UTC'),
    end_time          DateTime64(9, 'UTC'),
    duration_ms       Float64,
    span_count        UInt32,
    error_count       UInt32,
    llm_call_count    UInt32,
    tool_call_count   UInt32,
    input_tokens      UInt64,
    output_tokens     UInt64,
    total_tokens      UInt64,
    models            Array(LowCardinality(String)),
    providers         Array(LowCardinality(String)),
    completion_reason LowCardinality(String),
    spans_not_held    UInt32,  -- spans past max_spans_per_trace: stored in `spans`, not in memory
    first_seen        DateTime64(3, 'UTC'),
    last_seen         DateTime64(3, 'UTC'),
    completed_at      DateTime64(3, 'UTC'),
    kafka_topic       LowCardinality(String),
    kafka_partition   Int32,
    max_offset        Int64,
    INDEX ix_completed completed_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(completed_at)
ORDER BY trace_id
SETTINGS non_replicated_deduplication_window = 10000;
