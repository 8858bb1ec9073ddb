-- The product-event joins (stream/events.py) look traces up by conversation and product events up
-- by trace and by conversation, for every completed chunk of traces and every batch of events.
-- Neither is either table's key, so each lookup read the whole table (FINAL): ~0.15 s per chunk
-- and ~0.36 s per events batch at 1M stored traces, growing with the tables (bench/event_joins.py).
-- These projections keep each table's rows a second time ordered by the lookup key, so a lookup
-- reads the granules of its keys whatever the table's size. A projection is used only without
-- FINAL: the joins read every version of a row and keep the newest themselves. ReplacingMergeTree
-- takes projections only with deduplicate_merge_projection_mode set ('rebuild': a merge that
-- drops replaced rows rebuilds the projection). MATERIALIZE builds them for rows stored before.
ALTER TABLE {db}.traces MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE {db}.traces ADD PROJECTION IF NOT EXISTS by_conversation
    (SELECT trace_id, conversation_id, policy_version, start_time, end_time, completed_at ORDER BY conversation_id);
ALTER TABLE {db}.traces MATERIALIZE PROJECTION by_conversation;
ALTER TABLE {db}.action_events MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE {db}.action_events ADD PROJECTION IF NOT EXISTS by_trace (SELECT * ORDER BY trace_id);
ALTER TABLE {db}.action_events ADD PROJECTION IF NOT EXISTS by_conversation (SELECT * ORDER BY conversation_id);
ALTER TABLE {db}.action_events MATERIALIZE PROJECTION by_trace;
ALTER TABLE {db}.action_events MATERIALIZE PROJECTION by_conversation;
