"""The rows a worker that has stored nothing asks a table's copy about (stream/reference_rows.py):
built by the worker's own decoder and row builders, taken by the tables as they are shipped."""

from __future__ import annotations

import asyncio
import time

from stream.events import EventJoiner
from stream.reference_rows import reference_events, reference_span_rows
from stream.rows import SPAN_COLUMNS
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from stream.table_copy import each_taken


def test_the_shipped_tables_take_the_reference_rows_and_keep_nothing(store: ClickHouseStore) -> None:
    now_ms = time.time_ns() // 1_000_000
    [row] = reference_span_rows(now_ms)
    span = dict(zip(SPAN_COLUMNS, row, strict=True))
    assert (span["name"], span["service_name"], span["operation"]) == ("chat gpt-4o-mini", "tracejudge-reference", "chat")
    assert span["input_tokens"] == 12 and span["output_tokens"] == 5 and span["convention"] == "genai"
    assert asyncio.run(each_taken(ClickHouseSink(store).spans_copy, [row])) == [None]
    joiner = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    assert asyncio.run(joiner.probe(reference_events(now_ms), now_ms)) == [None]
    for table in ("spans", "action_events"):  # the copies keep nothing, and are gone
        assert store.query(f"SELECT count() FROM {store.database}.{table}")[1] == [(0,)]
    assert store.query(f"SELECT name FROM system.tables WHERE database = '{store.database}' AND name LIKE '%_copy_%'")[1] == []
