-- Gates, signals and the sampling decision of each completed trace (issue: gating & sampling).
-- The decision is stored on the trace row: class, deciding rule, inclusion probability p and the
-- policy version, so the pass rate over all traffic can be estimated from judged samples.
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS sample_class LowCardinality(String) DEFAULT '';
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS sample_rule String DEFAULT '';
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS sample_stratum String DEFAULT '';
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS inclusion_p Float64 DEFAULT 0;
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS sampled UInt8 DEFAULT 0;
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS policy_version LowCardinality(String) DEFAULT '';
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS failed_gates Array(String) DEFAULT [];
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS gate_errors Array(String) DEFAULT [];
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS signals Array(String) DEFAULT [];

-- One row per gate that did not pass (fail or error) on a trace, with its evidence.
CREATE TABLE IF NOT EXISTS {db}.gate_results
(
    trace_id        String,
    gate            String,
    gate_type       LowCardinality(String),
    outcome         LowCardinality(String),  -- fail | error
    severity        LowCardinality(String),
    reason          String,
    evidence        String,  -- JSON array of {span_id, text, detail}
    policy_version  LowCardinality(String),
    service_name    LowCardinality(String),
    agent_name      String,
    completed_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(completed_at)
ORDER BY (trace_id, gate)
SETTINGS non_replicated_deduplication_window = 10000;

-- Semantic signals mined from user text, and action signals from product events.
CREATE TABLE IF NOT EXISTS {db}.signals
(
    trace_id        String,
    source          LowCardinality(String),  -- semantic | action
    type            LowCardinality(String),
    polarity        LowCardinality(String),  -- negative | positive
    rule            String,
    signal_key      String,  -- message index, or the action event id
    evidence        String,
    span_id         String,
    message_index   Int32,
    language        LowCardinality(String),
    is_late         UInt8,   -- action event that arrived after its trace was decided
    policy_version  LowCardinality(String),
    ts              DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY (trace_id, source, type, rule, signal_key)
SETTINGS non_replicated_deduplication_window = 10000;
