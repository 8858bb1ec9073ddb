-- Finance views (issue "outputs", part 2): judge spend and budget burn from the judge_calls ledger,
-- and the monitored agents' OWN LLM usage from spans. Plain views (no stored state): every read
-- goes to the ReplacingMergeTree tables with FINAL, so replays and retried inserts never count
-- twice. USD for the agents' usage is NOT here: prices are configuration (stream/prices.yaml),
-- applied in Python by `tracejudge costs --agents`. Judging cost and agents' spend are separate
-- views and are never added together.
--
-- Attribution of a judge call to an agent and a team goes through the judged trace:
--   service_name, agent_name  the trace row (traces FINAL), i.e. the trace's root span service and
--                             agent (see schemas.model.Trace.root)
--   team                      the root span's resource attribute `team`, else its
--                             `service.namespace`, else the trace's service_name
-- A call whose trace is not in `traces` (calibration and drift runs judge golden cases, not live
-- traces) has empty service_name / agent_name / team.
-- "charged" = the call was paid from a to_judge partition's budget share (kafka_partition >= 0:
-- live, backlog, flake); calibration and drift runs are on the ledger but not charged.

-- One row per judge call (ledger row), attributed. Filter on ts / day for time ranges.
CREATE OR REPLACE VIEW {db}.judge_calls_attributed AS
SELECT
    c.call_id AS call_id,
    c.ts AS ts,
    toDate(c.ts) AS day,
    c.period AS period,
    c.trace_id AS trace_id,
    c.judge AS judge,
    c.judge_version AS judge_version,
    c.rubric_hash AS rubric_hash,
    c.tier AS tier,
    c.purpose AS purpose,
    c.provider AS provider,
    c.model AS model,
    c.status AS status,
    c.input_tokens AS input_tokens,
    c.output_tokens AS output_tokens,
    c.cost_usd AS cost_usd,
    toUInt8(c.kafka_partition >= 0) AS charged,
    t.service_name AS service_name,
    t.agent_name AS agent_name,
    multiIf(r.team_attr != '', r.team_attr, t.service_name) AS team
FROM {db}.judge_calls AS c FINAL
LEFT JOIN
(
    SELECT trace_id, service_name, agent_name, root_span_id
    FROM {db}.traces FINAL
    WHERE trace_id IN (SELECT trace_id FROM {db}.judge_calls)
) AS t ON t.trace_id = c.trace_id
LEFT JOIN
(
    SELECT
        trace_id,
        span_id,
        multiIf(resource_attributes['team'] != '', resource_attributes['team'],
                resource_attributes['service.namespace']) AS team_attr
    FROM {db}.spans FINAL
    WHERE trace_id IN (SELECT trace_id FROM {db}.judge_calls)
) AS r ON r.trace_id = t.trace_id AND r.span_id = t.root_span_id;

-- Judge cost per day x judge x model x tier x purpose x provider x service x agent x team.
CREATE OR REPLACE VIEW {db}.judge_cost_daily AS
SELECT
    day,
    judge,
    model,
    tier,
    purpose,
    provider,
    service_name,
    agent_name,
    team,
    count() AS calls,
    countIf(status != 'ok') AS failed_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(a.cost_usd) AS cost_usd,
    sumIf(a.cost_usd, a.charged = 1) AS charged_usd  -- qualified: `cost_usd` alone is the alias above
FROM {db}.judge_calls_attributed AS a
GROUP BY day, judge, model, tier, purpose, provider, service_name, agent_name, team;

-- Budget burn per day, per judge and for all judges together (judge = '*'): spend charged to the
-- budget shares, spend outside them (calibration, drift), and the month-to-date cumulative sums
-- (UTC calendar month; computed over the whole ledger, so a filter on `day` does not truncate them).
-- The configured budgets are not in the database: compare in Grafana with the dashboard variable,
-- or run `tracejudge costs --judging judging.yaml` for % of budget and the month-end projection.
CREATE OR REPLACE VIEW {db}.judge_budget_daily AS
SELECT
    day,
    judge,
    calls,
    cost_usd,
    charged_usd,
    cost_usd - charged_usd AS uncharged_usd,
    sum(cost_usd) OVER w AS month_to_date_usd,
    sum(charged_usd) OVER w AS month_to_date_charged_usd
FROM
(
    SELECT toDate(c.ts) AS day, c.judge AS judge, count() AS calls, sum(c.cost_usd) AS cost_usd,
           sumIf(c.cost_usd, c.kafka_partition >= 0) AS charged_usd
    FROM {db}.judge_calls AS c FINAL
    GROUP BY day, judge
    UNION ALL
    SELECT toDate(c.ts) AS day, '*' AS judge, count() AS calls, sum(c.cost_usd) AS cost_usd,
           sumIf(c.cost_usd, c.kafka_partition >= 0) AS charged_usd
    FROM {db}.judge_calls AS c FINAL
    GROUP BY day
)
WINDOW w AS (PARTITION BY judge, toStartOfMonth(day) ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

-- The monitored agents' own LLM calls: one row per LLM span (kind = 'llm'; agent and chain spans
-- that repeat their children's totals are left out so nothing is counted twice), attributed to
-- the span's OWN service (the caller that pays) and team (its resource attribute `team`, else
-- `service.namespace`, else its service.name). The agent is the span's gen_ai.agent.name, else
-- the trace's agent. model = response model, else request model (as schemas.model.Span.model).
-- Filter on ts / day: the filter reaches the spans scan (partitioned by day); the join side is
-- every trace that has an agent name (trace_id + agent_name only).
CREATE OR REPLACE VIEW {db}.agent_llm_calls AS
SELECT
    s.trace_id AS trace_id,
    s.span_id AS span_id,
    s.start_time AS ts,
    toDate(s.start_time) AS day,
    s.service_name AS service_name,
    if(s.agent_name != '', s.agent_name, t.agent_name) AS agent_name,
    multiIf(s.resource_attributes['team'] != '', s.resource_attributes['team'],
            s.resource_attributes['service.namespace'] != '', s.resource_attributes['service.namespace'],
            s.service_name) AS team,
    s.provider AS provider,
    if(s.response_model != '', s.response_model, s.request_model) AS model,
    s.input_tokens AS input_tokens,
    s.output_tokens AS output_tokens,
    s.total_tokens AS total_tokens,
    s.cache_read_tokens AS cache_read_tokens,
    s.cache_creation_tokens AS cache_creation_tokens,
    s.reasoning_tokens AS reasoning_tokens
FROM {db}.spans AS s FINAL
LEFT JOIN
(
    SELECT trace_id, agent_name FROM {db}.traces FINAL WHERE agent_name != ''
) AS t ON t.trace_id = s.trace_id
WHERE s.kind = 'llm';

-- Agents' LLM usage per day x service x agent x team x provider x model (tokens, not USD).
CREATE OR REPLACE VIEW {db}.agent_llm_usage_daily AS
SELECT
    day,
    service_name,
    agent_name,
    team,
    provider,
    model,
    count() AS llm_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(total_tokens) AS total_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_creation_tokens) AS cache_creation_tokens,
    sum(reasoning_tokens) AS reasoning_tokens
FROM {db}.agent_llm_calls
GROUP BY day, service_name, agent_name, team, provider, model;
