"""stream/sink.py against the real embedded ClickHouse: recovering a partition's open spans."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest

from schemas.decode import decode_message
from stream.rows import SPAN_COLUMNS, span_row
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto


def test_a_stored_row_that_cannot_be_read_back_is_left_out_not_retried(store: ClickHouseStore,
                                                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Recovery runs its read under retry_forever, with the pipeline's lock held: a row whose
    parse raised was read again forever and the worker consumed nothing. Retrying cannot fix a
    row; it is logged and left out, the partition's other open spans come back."""
    spans = decode_message(proto(genai_trace(random.Random(4), 3)))
    now_ms = int(time.time() * 1000)
    rows = [list(span_row(s, "in", 0, i, now_ms, late=False)) for i, s in enumerate(spans)]
    rows[1][SPAN_COLUMNS.index("events")] = "[{not json"  # what no writer of ours produces
    store.insert("spans", rows, SPAN_COLUMNS)
    with caplog.at_level(logging.ERROR, logger="stream.sink"):
        got = asyncio.run(ClickHouseSink(store).load_open_spans(("in", 0), 600.0))
    assert sorted(s.span_id for s, _, _ in got) == sorted(s.span_id for s in (spans[0], spans[2]))
    assert f"span {spans[1].span_id} of in/0: stored row cannot be read back" in caplog.text
