"""stream/export_dataset.py: the dataset directory's changelog and what an export replaces, on
the real embedded ClickHouse (the seeded traces of test_export_cases.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stream.store import ClickHouseStore
from tests.stream.test_export_cases import MS0, TC_HASH, VERDICT_COLS, _export, _files, _id, seed, verdict


def test_trace_content_in_the_changelog_is_one_code_span() -> None:
    """Service and agent names come from untrusted resource attributes: raw in CHANGELOG.md, a
    newline and '## ...' forged a dataset version, '![](url)' a tracking image."""
    from stream.export_dataset import _code

    assert _code("bot\n## Dataset version forged") == "`bot ## Dataset version forged`"
    assert _code("![](http://tracker/p.png)`x`") == "`![](http://tracker/p.png)'x'`"
    assert len(_code("a" * 1000)) == 202


@pytest.mark.parametrize("fmt", ["yaml", "jsonl"])
def test_a_gate_only_case_judged_fail_since_is_replaced_not_doubled(store: ClickHouseStore, tmp_path: Path,
                                                                   fmt: str) -> None:  # fmt: skip
    """c was exported as a gate-only failure while its judging was pending; judged fail since, it
    got the verdict's case beside the stale gate case: two cases for one failure, graded
    differently. Now the verdict's case replaces it and takes what a human wrote there."""
    ids = seed(store)
    out = tmp_path / "ds"
    _export(store, out, fmt=fmt)
    gate_case = _id(ids["c"], "gate", "loop")
    if fmt == "yaml":
        path = out / "backlog" / f"{gate_case}.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc["expected_output"] = "Stop after the second identical search."
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    store.insert("verdicts", [verdict(ids["c"], "task_completion", TC_HASH, "fail", 0.2, MS0 + 9000)], VERDICT_COLS)
    report = _export(store, out, fmt=fmt)
    judged = _id(ids["c"], "task_completion", TC_HASH)
    assert report.superseded == [gate_case] and report.removed == [gate_case] and report.added == [judged]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    cases = {c["id"] for c in manifest["cases"]}
    assert gate_case not in cases and judged in cases and report.total == len(cases) == 3
    assert gate_case.encode() not in b"".join(_files(out)[k] for k in _files(out) if k.endswith((".yaml", ".jsonl")))
    changelog = (out / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"`{gate_case}` (a failing verdict's case replaces it)" in changelog
    if fmt == "yaml":
        new_doc = yaml.safe_load((out / "backlog" / f"{judged}.yaml").read_text(encoding="utf-8"))
        assert new_doc["expected_output"] == "Stop after the second identical search."
    again = _export(store, out, fmt=fmt)
    assert not again.changed and again.superseded == []
