"""The demo summary's Judges section (stream/demo/judging.py) degrades gracefully: no judging tables
yet, no judging agent, and trace text printed literally, never as markup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from stream.demo.fleet import FleetStats
from stream.demo.judging import DemoJudging, _judges_summary, _wait_for_judging


class _FakeWorker:
    """Answers the summary's queries from ``answers`` (first matching substring), else raises as the
    worker's SQL API does for a missing table."""

    log_path = "worker.log"

    def __init__(self, answers: dict[str, list[list[Any]]], judging: dict[str, Any] | None) -> None:
        self.answers = answers
        self.judging = judging

    def status(self) -> dict[str, Any]:
        return {"counters": {}, "judging": self.judging}

    def sql(self, query: str) -> list[list[Any]]:
        for needle, rows in self.answers.items():
            if needle in query:
                return rows
        raise RuntimeError("Code: 60. DB::Exception: Unknown table expression identifier 'tracejudge.verdicts'")


def _summary_text(worker: _FakeWorker) -> str:
    console = Console(record=True, width=200)
    judging = DemoJudging("simulated", Path("judging.yaml"), None, ("task_completion",), 0.5)
    _wait_for_judging(worker, 0, "tracejudge", console, 1, timeout=2, stall=0.5)  # type: ignore[arg-type]
    _judges_summary(worker, FleetStats(), 0, "tracejudge", console, judging)  # type: ignore[arg-type]
    return console.export_text()


def test_judges_summary_without_judging_tables_says_no_verdicts_yet() -> None:
    text = _summary_text(_FakeWorker({"sum(sampled)": [[12]]}, judging=None))
    assert "no verdicts yet" in text and "no judging agent" in text
    text = _summary_text(_FakeWorker({"sum(sampled)": [[12]]}, judging={"paused": {}}))
    assert "no verdicts yet" in text


def test_judges_summary_prints_trace_text_literally() -> None:
    evil = "[bold red]pwned[/bold red] [link=http://x]click[/link]"
    worker = _FakeWorker({
        "sum(sampled)": [[0]],
        "GROUP BY judge, status, label": [["task_completion", "ok", "fail", 3, 0.1, 1, 0]],
        "countIf(status = 'budget_skipped')": [[3, 1, 0, 0, 0, 0]],
        "GROUP BY escalation": [["low_confidence", 1]],
        "FROM tracejudge.judge_calls FINAL WHERE ts": [["task_completion", "cheap", "sim-cheap", "sim-cheap-sim",
                                                        4, 0, 4000, 400, 0.0012]],
        "WHERE period": [[0.0012]],
        "ORDER BY judged_at DESC LIMIT 5": [["ab" * 16, "task_completion", "cheap", 0.1, evil]],
    }, judging={"paused": {"openai": f"401 {evil}"}})  # fmt: skip
    text = _summary_text(worker)
    assert "[bold red]pwned[/bold red]" in text  # shown as text, not interpreted as markup
    assert "escalations 1 (low_confidence 1)" in text and "budget_skipped 0" in text
    assert "$0.0012" in text and "pass-rate estimate: no ok verdicts yet" in text
