-- Judging (issue: judges under a hard budget). Every table is idempotent on retry: inserts carry
-- a dedup token and each table is a ReplacingMergeTree on its natural key (read with FINAL).

-- The cost ledger: one row per paid provider call (live, backlog, flake re-judge, drift,
-- calibration). call_id is unique per call, so a call repeated after a crash is a second row:
-- "repeated paid calls" = rows of the same (trace_id, judge, rubric_hash, tier, purpose) beyond one.
-- An ok call's result is kept, keyed by (rubric_hash, model, input_hash): the verdict cache, which
-- also lets a replay after a crash reuse a paid answer whose verdict row was never written.
CREATE TABLE IF NOT EXISTS {db}.judge_calls
(
    call_id         String,
    ts              DateTime64(3, 'UTC'),
    period          Int64,   -- budget period index: floor(unix seconds / period_s)
    trace_id        String,
    judge           LowCardinality(String),
    judge_version   String,
    rubric_hash     String,
    tier            LowCardinality(String),
    purpose         LowCardinality(String),  -- live | backlog | flake | drift | calibration
    provider        LowCardinality(String),
    model           LowCardinality(String),
    model_reported  String,
    status          LowCardinality(String),  -- ok | unscored | error
    status_reason   String,
    input_tokens    UInt64,
    output_tokens   UInt64,
    cost_usd        Float64,
    latency_s       Float64,
    attempts        UInt16,
    kafka_partition Int32,   -- to_judge partition whose budget share paid (-1: none)
    worker_run      String,  -- random per worker process: tells a replay's call from the first
    input_hash      String,  -- canonical judge input (see judges.prompt.input_hash)
    result          String,  -- JSON {label, score, explanation, evidence} of an ok call: the verdict cache
    INDEX ix_ts ts TYPE minmax GRANULARITY 1,
    INDEX ix_input input_hash TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
ORDER BY call_id
SETTINGS non_replicated_deduplication_window = 10000;

-- One verdict per (trace, judge, rubric version). `version` ranks outcomes so a later real verdict
-- replaces a budget_skipped / error placeholder (budget_skipped 1 < error 2 < unscored 3 < ok 4),
-- never the reverse.
CREATE TABLE IF NOT EXISTS {db}.verdicts
(
    trace_id        String,
    judge           LowCardinality(String),
    rubric_hash     String,
    judge_version   String,
    status          LowCardinality(String),  -- ok | unscored | budget_skipped | error
    status_reason   String,
    label           Nullable(String),
    score           Nullable(Float64),
    explanation     String,
    evidence        String,  -- JSON array of strings
    tier            LowCardinality(String),  -- the tier whose verdict this is
    tiers_called    Array(LowCardinality(String)),
    escalated       UInt8,
    escalation      String,  -- why: low_confidence | required | tier_disagreement | cheap_failed
    provider        LowCardinality(String),
    model           LowCardinality(String),  -- pinned
    model_reported  String,
    temperature     Float64,
    seed            Nullable(Int64),
    input_tokens    UInt64,  -- all calls of this verdict (both tiers)
    output_tokens   UInt64,
    cost_usd        Float64,
    latency_s       Float64,
    attempts        UInt16,
    input_hash      String,  -- canonical judge input: cache key with rubric_hash and model
    cache_hit       UInt8,
    monitoring_only UInt8,   -- judge version below its calibration floor: never alerting
    quarantined     UInt8,   -- judge flaky (self-disagreement above threshold)
    sample_class    LowCardinality(String),
    sample_stratum  String,
    inclusion_p     Float64,
    policy_version  LowCardinality(String),
    service_name    LowCardinality(String),
    agent_name      String,
    purpose         LowCardinality(String),  -- live | backlog
    judged_at       DateTime64(3, 'UTC'),
    kafka_partition Int32,
    kafka_offset    Int64,
    version         UInt8,
    INDEX ix_input input_hash TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (trace_id, judge, rubric_hash)
SETTINGS non_replicated_deduplication_window = 10000;

-- Failures deferred when the budget ran out (or the judge was paused): judged later, when the
-- partition's share allows it. The envelope is the to_judge message, so nothing has to be rebuilt.
CREATE TABLE IF NOT EXISTS {db}.judge_backlog
(
    trace_id        String,
    judge           LowCardinality(String),
    rubric_hash     String,
    state           LowCardinality(String),  -- pending | done
    reason          String,
    envelope        String,
    kafka_partition Int32,
    deferred_at     DateTime64(3, 'UTC'),
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (trace_id, judge, rubric_hash)
SETTINGS non_replicated_deduplication_window = 10000;

-- Agreement of a judge version with human labels: `tracejudge calibrate` (kind calibration) and
-- the scheduled re-runs of a frozen reference set (kind drift).
CREATE TABLE IF NOT EXISTS {db}.judge_calibrations
(
    run_id          String,
    kind            LowCardinality(String),  -- calibration | drift
    judge           LowCardinality(String),
    judge_version   String,
    rubric_hash     String,
    tier            LowCardinality(String),
    model           LowCardinality(String),
    golden_hash     String,  -- sha256 of the golden file's cases
    n               UInt32,
    n_scored        UInt32,
    accuracy        Float64,
    tpr             Float64,
    tnr             Float64,
    kappa           Float64,
    tier_disagreement Nullable(Float64),
    details         String,  -- JSON: confusion matrix, unscored count, ...
    created_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (judge, rubric_hash, kind, tier, run_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Flake pairs: a trace judged a second time by the same judge version and model.
CREATE TABLE IF NOT EXISTS {db}.judge_rejudges
(
    trace_id        String,
    judge           LowCardinality(String),
    rubric_hash     String,
    model           LowCardinality(String),
    first_label     String,
    second_label    String,
    agree           UInt8,
    judged_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (judge, rubric_hash, trace_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Alerts raised by judging: drift, quarantine, judge paused (config error), budget.
CREATE TABLE IF NOT EXISTS {db}.judge_alerts
(
    alert_id        String,
    kind            LowCardinality(String),  -- drift | quarantine | paused | budget
    judge           LowCardinality(String),
    rubric_hash     String,
    state           LowCardinality(String),  -- firing | resolved
    message         String,
    details         String,  -- JSON
    created_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (kind, judge, rubric_hash, alert_id)
SETTINGS non_replicated_deduplication_window = 10000;
