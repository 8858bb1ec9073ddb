-- On-call alert state (stream/alerts.py): one row per alert key (e.g. pass_rate:task_completion,
-- budget:global, judge:quarantine:task_completion:<rubric hash>), the newest `seq` wins. A row is
-- written only after its webhook post succeeded, so what is stored is what on-call was told:
-- a firing alert is posted once, re-posted at most every cooldown, and "resolved" is posted once.
CREATE TABLE IF NOT EXISTS {db}.alert_state
(
    alert_key        String,
    kind             LowCardinality(String),  -- pass_rate | budget | drift | quarantine | paused
    state            LowCardinality(String),  -- firing | resolved
    severity         UInt8,   -- budget: number of thresholds crossed; otherwise 1
    message          String,  -- the last text posted
    details          String,  -- JSON: the evaluation behind the last post
    first_fired_at   DateTime64(3, 'UTC'),
    last_notified_at DateTime64(3, 'UTC'),
    notifications    UInt32,  -- posts of this key so far (firing, reminders, resolved)
    updated_at       DateTime64(3, 'UTC'),
    seq              UInt64   -- previous seq + 1: the ReplacingMergeTree version
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY alert_key
SETTINGS non_replicated_deduplication_window = 10000;
