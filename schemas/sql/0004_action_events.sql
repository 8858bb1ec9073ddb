-- Product events (regenerate, thumbs_down, abandon, ...) from the events topic. Joined to traces
-- by trace id, or by conversation id within a window: at trace completion (they feed the
-- sampling decision), or at arrival if the trace was already decided (then is_late = 1 and the
-- event is linked to that trace and also written to `signals`).
CREATE TABLE IF NOT EXISTS {db}.action_events
(
    event_id          String,
    trace_id          String,
    conversation_id   String,
    type              LowCardinality(String),
    ts                DateTime64(3, 'UTC'),
    attributes        String,  -- JSON object
    linked_trace_id   String,
    is_late           UInt8,
    kafka_topic       LowCardinality(String),
    kafka_partition   Int32,
    kafka_offset      Int64,
    ingested_at       DateTime64(3, 'UTC'),
    INDEX ix_trace trace_id TYPE bloom_filter GRANULARITY 4,
    INDEX ix_conversation conversation_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY event_id
SETTINGS non_replicated_deduplication_window = 10000;
