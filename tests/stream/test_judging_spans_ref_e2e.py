"""End to end: a real worker (tansu broker, embedded ClickHouse) with a small
``max_judge_message_bytes`` sends a sampled trace larger than that to ``traces.to_judge`` by
reference; its judge agent loads the spans from ClickHouse and judges the whole trace."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.factories import genai_trace, proto
from tests.judges.fake_provider import FakeProviderServer
from tests.stream.conftest import Deployment, wait_for
from tests.stream.judging_support import config, honest

DB = "tracejudge"


def count(worker: Any, sql: str) -> int:
    return int(worker.sql(sql)[0][0])


def test_a_sampled_trace_over_max_judge_message_bytes_is_judged_by_reference(
    deployment: Callable[..., Deployment], tmp_path: Any
) -> None:
    rng = random.Random(11)
    rng.randrange(10**9)  # (drawn as before: the data below stays that of this seed)
    with FakeProviderServer() as server:
        server.default = honest()
        judging = tmp_path / "judging.yaml"
        judging.write_text(yaml.safe_dump(config(server, budget={"global_usd": 100.0})))
        d = deployment(judging_file=judging,
                       max_judge_message_bytes=20_000)  # fmt: skip
        d.settings["FAKE_OPENAI_KEY"] = "sk-test"
        worker = d.start_worker()
        big, small = genai_trace(rng, 41), genai_trace(rng, 4)
        for span in big:  # ~60 KB of message text: the full envelope would be 3x the cap
            for attr in ("gen_ai.input.messages", "gen_ai.output.messages"):
                if attr in span.attrs:
                    span.attrs[attr] = span.attrs[attr].replace("question", "bigtrace-question " + "lorem " * 250)
        for t in (big, small):
            t[-1].error = True  # suspected failures: sampled
        d.produce([(t[0].trace_id.hex().encode(), proto(t), None) for t in (big, small)])
        big_id, small_id = big[0].trace_id.hex(), small[0].trace_id.hex()

        assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.verdicts FINAL") == 2, 90)
        time.sleep(1.0)  # nothing more arrives
        rows = worker.sql(f"SELECT trace_id, status FROM {DB}.verdicts")  # no FINAL: duplicates would show
        assert sorted(map(tuple, rows)) == sorted([(big_id, "ok"), (small_id, "ok")])
        assert count(worker, f"SELECT span_count FROM {DB}.traces FINAL WHERE trace_id = '{big_id}'") == 41
        prompts = [str(r.body) for r in server.requests]
        assert any("bigtrace-question lorem lorem" in p for p in prompts)  # its spans' content
        counters = worker.status()["judging"]["counters"]
        assert counters["spans_by_reference"] == 1 and counters["dead_lettered"] == 0
        assert counters["spans_ref_not_found"] == 0
