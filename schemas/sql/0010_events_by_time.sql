-- The pipeline's product-event reads (stream/events.py: before a chunk of traces is decided, and
-- again after its trace rows are stored) look up events by trace and by conversation. Through the
-- projections of 0009 each lookup read a granule per key, ~130 ms per read at 3.3M stored events
-- and rising with the table until nearly every granule is read (bench/event_joins.py). An event
-- about a trace is stored after the trace started, so these reads, like the recovery sweep, now
-- ask for the events stored (ingested_at) since the chunk's oldest start: the table is written in
-- time order, so a minmax index leaves out every part stored before that and the read costs what
-- was stored since, whatever the table holds. The projections are read by nothing else: dropped,
-- each event is written once again instead of three times.
ALTER TABLE {db}.action_events ADD INDEX IF NOT EXISTS ix_ingested ingested_at TYPE minmax GRANULARITY 1;
ALTER TABLE {db}.action_events MATERIALIZE INDEX ix_ingested;
ALTER TABLE {db}.action_events DROP PROJECTION IF EXISTS by_trace;
ALTER TABLE {db}.action_events DROP PROJECTION IF EXISTS by_conversation;
