"""Steady trace load and store checks shared by the kill, SIGTERM and soak scenarios: a producer
of GenAI traces at a fixed rate (keyed, and unkeyed split over two partitions), a judging
deployment against a local fake provider, and what the store holds (lost, duplicated)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import yaml
from aiokafka import AIOKafkaProducer

from tests.factories import SpanSpec, genai_trace, proto
from tests.judges.fake_provider import Fail, FakeProviderServer, Func
from tests.stream.conftest import Deployment
from tests.stream.judging_support import config, honest_answer

DB = "tracejudge"
Msg = tuple[bytes | None, bytes, int | None]


# ---- load ---------------------------------------------------------------------------------
def make_trace(rng: random.Random, serial: int, failing: bool) -> list[SpanSpec]:
    """A GenAI agent trace starting now, with content unique to ``serial`` (no verdict-cache hits);
    a failing one has an errored last span and an answer the honest judge labels ``fail``."""
    spans = genai_trace(rng, rng.randrange(3, 12))
    shift = time.time_ns() - spans[0].start
    for s in spans:
        s.start += shift
        s.end += shift
        for attr, word in (("gen_ai.input.messages", "question"), ("gen_ai.output.messages", "answer")):
            if attr in s.attrs:
                marker = "ERROR " if failing and word == "answer" else ""
                s.attrs[attr] = s.attrs[attr].replace(word, f"{marker}{word} of trace {serial}")
    spans[-1].error = failing
    return spans


def messages_for(rng: random.Random, spans: list[SpanSpec], keyed: bool, partitions: int) -> list[Msg]:
    """Keyed by trace id (the Collector's ``partition_traces_by_id``), or unkeyed and split in two
    messages on different partitions (the worker repartitions them by trace id)."""
    if keyed:
        return [(spans[0].trace_id.hex().encode(), proto(spans), None)]
    p = rng.randrange(partitions)
    return [(None, proto(spans[::2]), p), (None, proto(spans[1::2]), (p + 1) % partitions)]


class BackgroundProducer:
    """Runs :meth:`_produce` (until ``_stop`` is set) on a thread of its own; ``stop`` raises what it raised."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        if self._error is not None:
            raise RuntimeError(f"the {self._thread.name} producer failed") from self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    async def _produce(self) -> None:
        raise NotImplementedError


class TraceLoad(BackgroundProducer):
    """Produces traces at a fixed rate from a background thread; remembers what the broker acked.

    ``sent`` maps trace id → span count, for traces whose every message was acknowledged."""

    def __init__(self, bootstrap: str, topic: str, *, rate: float, seed: int = 0, partitions: int = 4,
                 failing_share: float = 0.3, keyed_share: float = 0.5) -> None:  # fmt: skip
        super().__init__("trace-load")
        self.bootstrap, self.topic, self.rate, self.partitions = bootstrap, topic, rate, partitions
        self.failing_share, self.keyed_share = failing_share, keyed_share
        self.rng = random.Random(seed)
        self.sent: dict[str, int] = {}
        self.conversations: dict[str, str] = {}  # trace id -> its gen_ai.conversation.id
        self.failing: set[str] = set()
        self.messages = 0

    @property
    def spans(self) -> int:
        return sum(self.sent.values())

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all")
        await producer.start()
        try:
            started, made = time.monotonic(), 0
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate) - made
                batch = []
                for _ in range(max(due, 0)):
                    failing = self.rng.random() < self.failing_share
                    spans = make_trace(self.rng, len(self.sent) + len(batch), failing)
                    keyed = self.rng.random() < self.keyed_share
                    batch.append((spans, failing, messages_for(self.rng, spans, keyed, self.partitions)))
                futures = [await producer.send(self.topic, v, key=k, partition=p)
                           for _, _, msgs in batch for k, v, p in msgs]  # fmt: skip
                await asyncio.gather(*futures)
                for spans, failing, msgs in batch:
                    tid = spans[0].trace_id.hex()
                    self.conversations[tid] = spans[0].attrs.get("gen_ai.conversation.id", "")
                    self.sent[tid] = len(spans)
                    self.messages += len(msgs)
                    if failing:
                        self.failing.add(tid)
                made += len(batch)
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()


# ---- a judging deployment -------------------------------------------------------------------
def slow_honest(delay: float) -> Func:
    """The honest fake judge (``fail`` iff the trace shows ERROR), answering after ``delay`` s."""

    def answer(body: Any) -> Any:
        if not isinstance(body, dict):  # a request cut short by a SIGKILL: nobody reads the answer
            return Fail(400, message="malformed request body")
        time.sleep(delay)
        return honest_answer(body)

    return Func(answer)


def judging_settings(server: FakeProviderServer, path: Path, **overrides: Any) -> dict[str, Any]:
    """Write a judging config for ``server`` to ``path``; the deployment settings that use it."""
    defaults = {"max_in_flight": 4, "batch_max_messages": 16, "budget": {"global_usd": 1000.0}}
    doc = config(server, **{**defaults, **overrides})
    path.write_text(yaml.safe_dump(doc))
    return {"judging_file": path}


def with_key(d: Deployment) -> Deployment:
    d.settings["FAKE_OPENAI_KEY"] = "sk-test"
    return d


# ---- what the store holds ---------------------------------------------------------------------
Sql = Callable[[str], list[list[Any]]]


def scalar(sql: Sql, query: str) -> int:
    return int(sql(query)[0][0])


def stored(sql: Sql, load: TraceLoad) -> dict[str, int]:
    """lost / duplicated spans and traces against what ``load`` sent, and the sampled traces' verdicts."""
    spans = scalar(sql, f"SELECT count() FROM {DB}.spans FINAL")
    per_trace = dict(sql(f"SELECT trace_id, uniqExact(span_id) FROM {DB}.spans FINAL GROUP BY trace_id"))
    raw = scalar(sql, f"SELECT count() FROM {DB}.spans")
    distinct = scalar(sql, f"SELECT count() FROM (SELECT DISTINCT trace_id, span_id FROM {DB}.spans)")
    dup = scalar(sql, f"SELECT count() FROM (SELECT trace_id, span_id FROM {DB}.spans FINAL "
                      "GROUP BY ALL HAVING count() > 1)")  # fmt: skip
    counts = dict(sql(f"SELECT trace_id, span_count FROM {DB}.traces FINAL"))
    dup_traces = scalar(sql, f"SELECT count() - uniqExact(trace_id) FROM {DB}.traces FINAL")
    sampled = {r[0] for r in sql(f"SELECT trace_id FROM {DB}.traces FINAL WHERE sampled = 1")}
    judged = [r[0] for r in sql(f"SELECT trace_id FROM {DB}.verdicts FINAL")]
    not_ok = scalar(sql, f"SELECT count() FROM {DB}.verdicts FINAL WHERE status != 'ok'")
    dup_verdicts = scalar(sql, f"SELECT count() FROM (SELECT trace_id, judge, rubric_hash FROM {DB}.verdicts "
                               "FINAL GROUP BY ALL HAVING count() > 1)")  # fmt: skip
    expected = sum(load.sent.values())
    return {
        "spans_sent": expected, "spans_final": spans,
        "lost": sum(max(0, n - per_trace.get(t, 0)) for t, n in load.sent.items()),
        "dup_final": dup, "raw_dup": raw - distinct,
        "traces_sent": len(load.sent), "traces_final": len(counts), "dup_traces": dup_traces,
        "traces_missing": sum(1 for t in load.sent if t not in counts),
        "wrong_span_count": sum(1 for t, n in load.sent.items() if t in counts and counts[t] != n),
        "unexpected_traces": sum(1 for t in counts if t not in load.sent),
        "sampled": len(sampled), "verdicts": len(judged), "dup_verdicts": dup_verdicts, "verdicts_not_ok": not_ok,
        "sampled_unjudged": len(sampled - set(judged)), "judged_unsampled": len(set(judged) - sampled),
    }


def settled(sql: Sql, load: TraceLoad) -> bool:
    """Every sent trace is stored and every sampled one has a verdict."""
    s = stored(sql, load)
    return s["traces_final"] >= s["traces_sent"] and s["verdicts"] >= s["sampled"]


