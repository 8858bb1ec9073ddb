"""Shared pieces of the judging tests: a local provider server that judges honestly, to_judge
messages, a JudgeService on the real embedded ClickHouse, and queries of what it stored."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from judges.config import parse_judging_config
from stream import judge_envelope
from stream.cluster import LOCAL_SUFFIX
from stream.dlq import InMessage, OutRecord
from stream.judge_sink import JudgeSink
from stream.judging import JudgeService, build_providers
from stream.store import ClickHouseStore
from tests.judges.fake_llm import build_trace
from tests.judges.fake_provider import FakeProviderServer, Func, Reply

KEY_ENV = {"FAKE_OPENAI_KEY": "sk-test"}
CHEAP, STRONG = "judge-cheap-1", "judge-strong-1"
_BLOCK = re.compile(r"<untrusted-[0-9a-f]{16}>(.*?)</untrusted-[0-9a-f]{16}>", re.DOTALL)


def honest_answer(body: Any, *, unsure_cheap: bool = True) -> Reply:
    """fail if the trace data shows ERROR, else pass; the cheap model is unsure (score 0.6) about
    traces whose user text says "maybe", the strong model is always sure."""
    user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
    data = "\n".join(_BLOCK.findall(user)) or user
    label = "fail" if "ERROR" in data else "pass"
    sure = 0.95
    if body["model"] == CHEAP and unsure_cheap and "maybe" in data:
        sure = 0.6
    score = sure if label == "pass" else 1 - sure
    text = json.dumps({"label": label, "score": score, "explanation": f"{label} by rule", "evidence": []})
    return Reply(text=text, input_tokens=1000, output_tokens=100)


def honest(**kw: Any) -> Func:
    return Func(lambda body: honest_answer(body, **kw))


def config(server: FakeProviderServer, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "providers": [{
            "name": "fake", "type": "openai", "base_url": server.url + "/v1", "api_key_env": "FAKE_OPENAI_KEY",
            "timeout_s": 1.0, "max_attempts": 3, "deadline_s": 10.0, "backoff_base_s": 0.05,
            "backoff_max_s": 0.2, "breaker_failures": 100,
        }],  # fmt: skip
        # cost of one call: 1000 in * 1/1M + 100 out * 10/1M = $0.002
        "tiers": {"cheap": {"provider": "fake", "model": CHEAP, "price_in_per_1m": 1.0, "price_out_per_1m": 10.0},
                  "strong": {"provider": "fake", "model": STRONG, "price_in_per_1m": 1.0, "price_out_per_1m": 10.0}},
        "judges": ["task_completion"],
        "ledger_flush_s": 0.05,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


class FakeTime:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


OPEN: list[JudgeService] = []  # made by service(), in order; close_services closes the newest


_LOOP = asyncio.new_event_loop()  # one loop for the judging tests: the providers' pooled clients live on it


def run(coro: Any) -> Any:
    """Run ``coro`` to completion on the judging tests' loop."""
    return _LOOP.run_until_complete(coro)


async def close_services(since: int) -> None:
    """Close the providers' connection pools of the services :func:`service` made after the first
    ``since`` (``len(OPEN)`` before a test made them), on the loop they ran on, as the worker does
    at shutdown: a pool left open is reported by aiohttp whenever the garbage collector finds it.
    (Services of other tests may have run on other loops, now closed: they are left alone.)"""
    while len(OPEN) > since:
        await OPEN.pop().aclose()


def service(store: ClickHouseStore, server: FakeProviderServer, clock: Callable[[], float] | None = None,
            partitions: int = 1, **overrides: Any) -> tuple[JudgeService, list[OutRecord]]:  # fmt: skip
    cfg = parse_judging_config(config(server, **overrides))
    sent: list[OutRecord] = []

    async def send(records: Any) -> None:
        sent.extend(records)

    svc = JudgeService(
        cfg, JudgeSink(store), send, topic="traces.to_judge", dlq_topic="traces.to_judge.dlq",
        partitions_total=partitions, providers=build_providers(cfg, env=KEY_ENV),
        clock=clock or FakeTime(), retry_initial=0.01, retry_max=0.05,
    )  # fmt: skip
    OPEN.append(svc)
    return svc, sent


def message(seed: int, *, failing: bool, cls: str = "suspected_failure", user: str = "where is my order?",
            partition: int = 0, offset: int | None = None) -> InMessage:  # fmt: skip
    trace = build_trace(user, "It ships tomorrow." if not failing else "Sorry.",
                        "ERROR: order service down" if failing else '{"status": "shipped"}',
                        tool_error=failing, seed=seed)  # fmt: skip
    meta = {"decision": {"class": cls, "rule": "r", "stratum": cls, "p": 1.0 if cls != "success" else 0.02,
                         "policy_version": "pv1"}, "failed_gates": [], "signals": []}  # fmt: skip
    value = judge_envelope.encode(trace, meta)
    return InMessage("traces.to_judge", partition, seed if offset is None else offset,
                     trace.trace_id.encode(), value)  # fmt: skip


def verdicts(store: ClickHouseStore) -> dict[str, dict[str, Any]]:
    cols, rows = store.query(f"SELECT * FROM {store.database}.verdicts FINAL")
    return {r[cols.index("trace_id")]: dict(zip(cols, r, strict=True)) for r in rows}


def verdict_rows(store: ClickHouseStore) -> int:
    """Visible rows without FINAL collapsing, after merges are forced: duplicates would show here.
    (On a cluster the data, and OPTIMIZE, are the shard's local table's.)"""
    table = f"{store.database}.verdicts{LOCAL_SUFFIX if store.cluster else ''}"
    store.command(f"OPTIMIZE TABLE {table} FINAL")
    return int(store.query(f"SELECT count() FROM {table}")[1][0][0])


def ledger(store: ClickHouseStore) -> list[dict[str, Any]]:
    cols, rows = store.query(f"SELECT * FROM {store.database}.judge_calls FINAL ORDER BY ts")
    return [dict(zip(cols, r, strict=True)) for r in rows]


def table_count(store: ClickHouseStore, table: str, where: str = "1") -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.{table} FINAL WHERE {where}")[1][0][0])

