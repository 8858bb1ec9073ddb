"""`tracejudge calibrate` against a real local HTTP provider (OpenAI protocol) and real embedded
ClickHouse: a 40-case golden set answered by a scripted judge whose right and wrong answers are
known, so every stored number is checked against a hand computation."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from judges.calibration import golden_hash, load_golden
from judges.config import parse_judging_config
from stream.calibrate_cli import (
    CalibrationError,
    CalibrationRow,
    calibrate,
    latest_calibrations,
    monitoring_only,
    render,
    run_cli,
)
from stream.config import load_settings
from stream.store import ClickHouseStore, StoreLockedError
from tests.judges.fake_provider import Fail, FakeProviderServer, Func, RawBody, Reply
from tests.judges.support import make_spec

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "task_completion.jsonl"
KEY = {"FAKE_OPENAI_KEY": "sk-test"}
CHEAP, STRONG = "judge-cheap-1", "judge-strong-1"
NOW = 1_800_000_000.5  # fixed clock: ledger period = floor(NOW / 86400)
_CASE = re.compile(r"case-(\d\d):")

# The golden set: case-00..15 are human "fail", case-16..39 human "pass". The cheap model:
#   human fail: 00-11 fail (right), 12-14 pass (missed), 15 invalid output (unscored)
#   human pass: 16-35 pass (right), 36-37 fail (false alarms), 38-39 invalid output
# and its first request for case-00 gets a 500 (retried: one call, two attempts).
# The strong model is right on every case.
CHEAP_ANSWERS = {i: "fail" for i in range(12)} | {12: "pass", 13: "pass", 14: "pass", 15: None} \
    | {i: "pass" for i in range(16, 36)} | {36: "fail", 37: "fail", 38: None, 39: None}  # fmt: skip
# scored (human, judge): fail/fail 12, fail/pass 3, pass/pass 20, pass/fail 2 -> n_scored 37
CHEAP_ACCURACY = Fraction(32, 37)
CHEAP_TPR, CHEAP_TNR = Fraction(12, 15), Fraction(20, 22)
# po = 32/37; human margins fail 15, pass 22; judge margins fail 14, pass 23
# pe = (15*14 + 22*23) / 37^2 = 716/1369; kappa = (1184 - 716) / (1369 - 716) = 468/653
CHEAP_KAPPA = Fraction(468, 653)
# both tiers ok on 37 cases; they differ on the cheap tier's 5 wrong answers
TIER_DISAGREEMENT = Fraction(5, 37)
COST_PER_CALL = (1000 * 1.0 + 100 * 10.0) / 1e6  # tokens x USD per 1M


class ScriptedJudge:
    """Answers each request by the case number in the (spotlighted) user message and the model."""

    def __init__(self, cheap: dict[int, str | None] = CHEAP_ANSWERS, fail_first: tuple[int, ...] = (0,)) -> None:
        self.cheap = cheap
        self.fail_first = set(fail_first)
        self.lock = threading.Lock()

    def __call__(self, body: Any) -> Reply | Fail | RawBody:
        user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        case = int(_CASE.search(user).group(1))  # type: ignore[union-attr]
        truth = "fail" if case < 16 else "pass"
        if body["model"] == CHEAP:
            with self.lock:
                if case in self.fail_first:
                    self.fail_first.discard(case)
                    return Fail(500, message="transient")
            label = self.cheap[case]
        else:
            label = truth
        if label is None:
            return Reply(text="I think this trace is fine.", input_tokens=1000, output_tokens=100)
        score = 0.9 if label == "pass" else 0.1
        text = json.dumps({"label": label, "score": score, "explanation": f"case {case}: {label}", "evidence": []})
        return Reply(text=text, input_tokens=1000, output_tokens=100)


def judging_doc(server: FakeProviderServer, **calibration: Any) -> dict[str, Any]:
    spec = make_spec(server, "openai", name="fake", timeout_s=5.0, backoff_base_s=0.01, backoff_max_s=0.05)
    price = {"price_in_per_1m": 1.0, "price_out_per_1m": 10.0}
    return {
        "providers": [spec.model_dump()],
        "tiers": {"cheap": {"provider": "fake", "model": CHEAP, **price}, "strong": {"provider": "fake", "model": STRONG, **price}},
        "judges": ["task_completion"],
        "calibration": {"min_kappa": {"task_completion": 0.75}, **calibration},
    }


def rows(store: ClickHouseStore, table: str, order: str) -> list[dict[str, Any]]:
    cols, data = store.query(f"SELECT * FROM {store.database}.{table} FINAL ORDER BY {order}")
    return [dict(zip(cols, r, strict=True)) for r in data]


def test_calibration_numbers_rows_and_ledger(store: ClickHouseStore) -> None:
    cases = load_golden(GOLDEN)
    with FakeProviderServer() as server:
        server.default = Func(ScriptedJudge())
        cfg = parse_judging_config(judging_doc(server))
        results = calibrate(cfg, "task_completion", cases, store, clock=lambda: NOW, env=KEY, concurrency=8)
        http_requests = len(server.requests)

    assert [r.tier for r in results] == ["cheap", "strong"]
    cheap, strong = results
    assert (cheap.agreement.n, cheap.agreement.n_scored) == (40, 37)
    assert cheap.agreement.confusion == {"fail": {"fail": 12, "pass": 3}, "pass": {"fail": 2, "pass": 20}}
    assert cheap.agreement.unscored == {"fail": 1, "pass": 2}
    assert cheap.below_floor and not strong.below_floor  # floor 0.75; 468/653 = 0.717

    stored = {r["tier"]: r for r in rows(store, "judge_calibrations", "tier")}
    assert set(stored) == {"cheap", "strong"}
    c, s = stored["cheap"], stored["strong"]
    assert (c["run_id"], s["run_id"]) == (f"{cheap.run_id}:cheap", f"{cheap.run_id}:strong")
    assert c["kind"] == s["kind"] == "calibration"
    assert (c["n"], c["n_scored"], s["n"], s["n_scored"]) == (40, 37, 40, 40)
    assert c["accuracy"] == pytest.approx(float(CHEAP_ACCURACY), abs=1e-12)
    assert c["tpr"] == pytest.approx(float(CHEAP_TPR), abs=1e-12)
    assert c["tnr"] == pytest.approx(float(CHEAP_TNR), abs=1e-12)
    assert c["kappa"] == pytest.approx(float(CHEAP_KAPPA), abs=1e-12)
    assert (s["accuracy"], s["tpr"], s["tnr"], s["kappa"]) == (1.0, 1.0, 1.0, 1.0)
    assert c["tier_disagreement"] == s["tier_disagreement"] == pytest.approx(float(TIER_DISAGREEMENT), abs=1e-12)
    assert c["golden_hash"] == golden_hash(cases) and c["model"] == CHEAP and s["model"] == STRONG
    assert c["rubric_hash"] == cfg.rubrics()["task_completion"].rubric_hash
    assert c["created_at"].timestamp() == pytest.approx(NOW, abs=0.001)
    details = json.loads(c["details"])
    assert details["confusion"] == {"fail": {"fail": 12, "pass": 3}, "pass": {"fail": 2, "pass": 20}}
    assert details["unscored"] == {"fail": 1, "pass": 2} and details["undefined"] == []
    assert details["statuses"] == {"ok": 37, "unscored": 3} and details["below_floor"] is True

    ledger = rows(store, "judge_calls", "call_id")
    assert len(ledger) == 80 == cheap.calls + strong.calls  # one row per paid call
    assert sum(r["attempts"] for r in ledger) == http_requests == 81  # case-00: 500, then ok
    assert {(r["purpose"], r["kafka_partition"], r["worker_run"]) for r in ledger} == {("calibration", -1, cheap.run_id)}
    assert {r["period"] for r in ledger} == {math.floor(NOW / 86400)}
    assert len({r["call_id"] for r in ledger}) == 80
    by_tier = {t: [r for r in ledger if r["tier"] == t] for t in ("cheap", "strong")}
    assert sorted(r["status"] for r in by_tier["cheap"]).count("unscored") == 3
    assert {r["status"] for r in by_tier["strong"]} == {"ok"}
    assert {r["model_reported"] for r in by_tier["cheap"]} == {f"{CHEAP}-2025-01-01"}
    assert sum(r["input_tokens"] for r in ledger) == 80 * 1000
    assert sum(r["cost_usd"] for r in ledger) == pytest.approx(80 * COST_PER_CALL)
    assert cheap.cost_usd == pytest.approx(40 * COST_PER_CALL)
    assert [r["attempts"] for r in by_tier["cheap"]].count(2) == 1
    assert all(len(r["input_hash"]) == 64 for r in ledger)

    console = Console(record=True, width=200)
    render(results, console, max_tier_disagreement=0.1)
    text = console.export_text()
    assert "0.7167" in text and "0.1351" in text and "13.5% of the cases" in text
    assert "escalates every trace" in text and "tier(s) cheap → monitoring_only" in text


def test_latest_calibration_decides_monitoring_only(store: ClickHouseStore) -> None:
    cases = load_golden(GOLDEN)
    with FakeProviderServer() as server:
        cfg = parse_judging_config(judging_doc(server))
        h = cfg.rubrics()["task_completion"].rubric_hash
        assert latest_calibrations(store) == {}
        assert not monitoring_only(cfg, "task_completion", h, {})  # never calibrated: not flagged
        server.default = Func(ScriptedJudge(fail_first=()))
        first = calibrate(cfg, "task_completion", cases, store, tiers=["cheap"], clock=lambda: NOW, env=KEY)
        latest = latest_calibrations(store)
        assert set(latest) == {("task_completion", h, "cheap")}
        row = latest[("task_completion", h, "cheap")]
        assert isinstance(row, CalibrationRow) and row.run_id == first[0].row_run_id
        assert row.kappa == pytest.approx(float(CHEAP_KAPPA)) and row.tier_disagreement is None
        assert monitoring_only(cfg, "task_completion", h, latest)  # 0.717 < 0.75
        assert not monitoring_only(cfg, "task_completion", "another-version", latest)
        lower = parse_judging_config(judging_doc(server, min_kappa={"task_completion": 0.7}))
        assert not monitoring_only(lower, "task_completion", h, latest)
        no_floor = parse_judging_config(judging_doc(server, min_kappa={}))
        assert not monitoring_only(no_floor, "task_completion", h, latest)

        # a newer run (the model fixed) replaces it; the worker reads it from the ClickHouse thread
        server.default = Func(ScriptedJudge(cheap={i: ("fail" if i < 16 else "pass") for i in range(40)}, fail_first=()))
        second = calibrate(cfg, "task_completion", cases, store, clock=lambda: NOW + 60, env=KEY)

        async def read() -> dict[tuple[str, str, str], CalibrationRow]:
            return await store.run(latest_calibrations, store)

        import asyncio

        latest = asyncio.run(read())
        assert {k[2] for k in latest} == {"cheap", "strong"}
        assert {r.details["run"] for r in latest.values()} == {second[0].run_id}
        assert latest[("task_completion", h, "cheap")].kappa == 1.0
        assert latest[("task_completion", h, "cheap")].tier_disagreement == 0.0
        assert not monitoring_only(cfg, "task_completion", h, latest)


def test_nothing_scored_stores_undefined_metrics_as_none(store: ClickHouseStore) -> None:
    cases = load_golden(GOLDEN)[:4]
    with FakeProviderServer() as server:
        server.default = Fail(400, message="bad request")  # not retried: an error verdict, 1 attempt
        cfg = parse_judging_config(judging_doc(server))
        [r] = calibrate(cfg, "task_completion", cases, store, tiers=["cheap"], clock=lambda: NOW, env=KEY)
    assert r.agreement.n_scored == 0 and r.agreement.kappa is None and r.below_floor
    [row] = latest_calibrations(store).values()
    assert (row.accuracy, row.tpr, row.tnr, row.kappa) == (None, None, None, None)
    assert row.details["statuses"] == {"error": 4}
    assert [c["status"] for c in rows(store, "judge_calls", "call_id")] == ["error"] * 4
    assert monitoring_only(cfg, "task_completion", row.rubric_hash, {("task_completion", row.rubric_hash, "cheap"): row})


def test_calibrate_refuses_what_it_cannot_run(store: ClickHouseStore) -> None:
    cases = load_golden(GOLDEN)
    with FakeProviderServer() as server:
        cfg = parse_judging_config(judging_doc(server))
        with pytest.raises(CalibrationError, match="FAKE_OPENAI_KEY"):
            calibrate(cfg, "task_completion", cases, store, env={})
        with pytest.raises(CalibrationError, match="unknown judge 'groundedness'"):
            calibrate(cfg, "groundedness", cases, store, env=KEY)
        with pytest.raises(CalibrationError, match="tiers \\['premium'\\]"):
            calibrate(cfg, "task_completion", cases, store, tiers=["premium"], env=KEY)
        relabeled = [type(c)(c.case_id, c.trace, c.meta, "partial") for c in cases]
        with pytest.raises(CalibrationError, match="'partial'"):
            calibrate(cfg, "task_completion", relabeled, store, env=KEY)
        assert server.requests == []
    assert rows(store, "judge_calls", "call_id") == [] and rows(store, "judge_calibrations", "tier") == []


def test_locked_store_exits_2_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.calibrate_cli as mod

    class Locked:
        @staticmethod
        def from_settings(*_: Any, **__: Any) -> ClickHouseStore:
            raise StoreLockedError("embedded ClickHouse at chdb:///x is in use by another process")

    monkeypatch.setattr(mod, "ClickHouseStore", Locked)
    with FakeProviderServer() as server:
        judging = tmp_path / "judging.yaml"
        judging.write_text(yaml.safe_dump(judging_doc(server)))
        out, err = Console(record=True, width=200), Console(record=True, width=200)
        code = run_cli(load_settings(None, data_dir=tmp_path), "task_completion", GOLDEN, judging, None, out, err, env=KEY)
        assert server.requests == []
    assert code == 2
    message = err.export_text()
    assert "in use by another process" in message and "stop the worker" in message


# ---- the command, as a user runs it ------------------------------------------------------------


def tracejudge(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEJUDGE_", "FAKE_"))}
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=cwd, env={**clean, **env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=240)  # fmt: skip


def test_calibrate_command_end_to_end(tmp_path: Path) -> None:
    with FakeProviderServer() as server:
        server.default = Func(ScriptedJudge())
        judging = tmp_path / "judging.yaml"
        judging.write_text(yaml.safe_dump(judging_doc(server)))
        env = {"TRACEJUDGE_DATA_DIR": str(tmp_path / "data"), **KEY}

        no_key = tracejudge("calibrate", "--judge", "task_completion", "--golden", str(GOLDEN),
                            "--judging", str(judging), cwd=tmp_path, env={"TRACEJUDGE_DATA_DIR": env["TRACEJUDGE_DATA_DIR"]})  # fmt: skip
        assert no_key.returncode == 2 and "FAKE_OPENAI_KEY" in no_key.stderr
        no_cfg = tracejudge("calibrate", "--judge", "task_completion", "--golden", str(GOLDEN), cwd=tmp_path, env=env)
        assert no_cfg.returncode == 2 and "--judging" in no_cfg.stderr
        bad = tmp_path / "bad.jsonl"
        bad.write_text(GOLDEN.read_text().splitlines()[0] + "\n{oops\n")
        bad_run = tracejudge("calibrate", "--judge", "task_completion", "--golden", str(bad), "--judging", str(judging),
                             cwd=tmp_path, env=env)  # fmt: skip
        assert bad_run.returncode == 2 and "bad.jsonl:2:" in bad_run.stderr.replace("\n", "")
        assert server.requests == []

        run = tracejudge("calibrate", "--judge", "task_completion", "--golden", str(GOLDEN), "--judging", str(judging),
                         "--tier", "cheap", cwd=tmp_path, env=env)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert len(server.requests) == 41  # cheap tier only: 40 calls, one retried
    out = run.stdout
    assert "tier cheap" in out and "tier strong" not in out
    assert f"{float(CHEAP_ACCURACY):.4f}" in out and f"{float(CHEAP_KAPPA):.4f}" in out
    assert f"{float(CHEAP_TPR):.4f}" in out and f"{float(CHEAP_TNR):.4f}" in out
    assert "monitoring_only" in out and "40 calls" in out

    q = tracejudge("sql", "--format", "json", "SELECT tier, n, n_scored, kappa, tier_disagreement, "
                   "(SELECT count() FROM tracejudge.judge_calls WHERE purpose = 'calibration') AS calls "
                   "FROM tracejudge.judge_calibrations FINAL", cwd=tmp_path, env=env)  # fmt: skip
    assert q.returncode == 0, q.stderr
    [row] = [json.loads(line) for line in q.stdout.splitlines()]
    assert (row["tier"], row["n"], row["n_scored"], row["calls"]) == ("cheap", 40, 37, 40)
    assert row["kappa"] == pytest.approx(float(CHEAP_KAPPA)) and row["tier_disagreement"] is None
