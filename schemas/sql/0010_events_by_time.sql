-- The pipeline's product-event reads (stream/events.py: before a chunk of traces is decided, and
-- again after its trace rows are stored) look up events by trace and by conversation. Through the
-- projections of 0009 each lookup read a granule per key in every part, ~120-200 ms per read at
-- 3.3M stored events (bench/event_joins.py). An event about a trace is stored after the trace
-- started, so for traces completing now these reads, like the recovery sweep, ask for the events
-- stored (ingested_at) since the chunk's oldest start: the table is written in time order, so a
-- minmax index leaves out every part stored before that, and the read costs what was stored
-- since, whatever the table holds. The projections stay for chunks whose traces started long ago
-- (a backlog), which look their events up by key.
ALTER TABLE {db}.action_events ADD INDEX IF NOT EXISTS ix_ingested ingested_at TYPE minmax GRANULARITY 1;
ALTER TABLE {db}.action_events MATERIALIZE INDEX ix_ingested;
