"""Agreement metrics on hand-computed confusion matrices, golden files, golden runs."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from judges.calibration import (
    GoldenCase,
    GoldenError,
    agreement,
    cohen_kappa,
    golden_hash,
    golden_line,
    load_golden,
    run_golden,
    tier_disagreement,
)
from judges.verdict import Verdict
from schemas.model import Trace
from tests.judges.fake_llm import build_trace

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "task_completion.jsonl"


def pairs_from(confusion: Mapping[str, Mapping[str | None, int]]) -> list[tuple[str, str | None]]:
    return [(h, j) for h, row in confusion.items() for j, k in row.items() for _ in range(k)]


def test_binary_textbook_kappa() -> None:
    # Cohen's kappa, the classic worked example: 50 proposals, two readers; yes/yes 20, yes/no 5,
    # no/yes 10, no/no 15 -> po = 0.7, pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4
    a = agreement(pairs_from({"fail": {"fail": 20, "pass": 5}, "pass": {"fail": 10, "pass": 15}}))
    assert (a.n, a.n_scored) == (50, 50)
    assert a.accuracy == pytest.approx(0.7)
    assert a.kappa == pytest.approx(0.4)
    assert a.tpr == pytest.approx(20 / 25)  # failures the judge caught
    assert a.tnr == pytest.approx(15 / 25)
    assert a.confusion == {"fail": {"fail": 20, "pass": 5}, "pass": {"fail": 10, "pass": 15}}


@pytest.mark.parametrize(
    ("yy", "yn", "ny", "nn", "kappa"),
    [
        (45, 15, 25, 15, Fraction(6, 46)),   # po 0.60, pe 0.54 -> 0.1304
        (25, 35, 5, 35, Fraction(14, 54)),   # po 0.60, pe 0.46 -> 0.2593
        (50, 0, 0, 50, Fraction(1)),         # perfect agreement
        (0, 50, 50, 0, Fraction(-1)),        # perfect disagreement, balanced
    ],
)
def test_binary_kappa_examples(yy: int, yn: int, ny: int, nn: int, kappa: Fraction) -> None:
    a = agreement(pairs_from({"fail": {"fail": yy, "pass": yn}, "pass": {"fail": ny, "pass": nn}}))
    assert a.kappa == pytest.approx(float(kappa), abs=1e-12)
    assert a.accuracy == pytest.approx((yy + nn) / 100)


def test_multiclass_kappa_and_collapsed_rates() -> None:
    # human rows x judge columns            pass partial fail | human total
    confusion = {"pass": {"pass": 10, "partial": 2},         # 12
                 "partial": {"pass": 1, "partial": 5, "fail": 2},  # 8
                 "fail": {"partial": 1, "fail": 9}}          # 10
    # judge totals: pass 11, partial 8, fail 11; n = 30; po = 24/30
    # pe = (12*11 + 8*8 + 10*11) / 900 = 306/900 -> kappa = (0.8 - 0.34) / 0.66 = 23/33
    a = agreement(pairs_from(confusion))
    assert a.accuracy == pytest.approx(24 / 30)
    assert a.kappa == pytest.approx(23 / 33, abs=1e-12)
    assert a.tpr == pytest.approx(9 / 10)  # human fail judged fail
    assert a.tnr == pytest.approx(18 / 20)  # human pass/partial judged anything but fail (2 partial->fail)


def test_unscored_pairs_count_in_n_only() -> None:
    scored = pairs_from({"fail": {"fail": 20, "pass": 5}, "pass": {"fail": 10, "pass": 15}})
    a = agreement([*scored, ("fail", None), ("fail", None), ("pass", None)])
    assert (a.n, a.n_scored) == (53, 50)
    assert a.unscored == {"fail": 2, "pass": 1}
    assert a.accuracy == pytest.approx(0.7) and a.kappa == pytest.approx(0.4)
    assert a.tpr == pytest.approx(0.8) and a.tnr == pytest.approx(0.6)


def test_undefined_metrics_are_none_never_nan() -> None:
    nothing = agreement([("fail", None), ("pass", None)])
    assert (nothing.n, nothing.n_scored) == (2, 0)
    assert (nothing.accuracy, nothing.tpr, nothing.tnr, nothing.kappa) == (None, None, None, None)
    only_pass = agreement([("pass", "pass"), ("pass", "fail"), ("pass", "pass")])
    assert only_pass.tpr is None and only_pass.tnr == pytest.approx(2 / 3)
    # one rater constant: pe = po, kappa 0 (no agreement beyond chance)
    assert only_pass.kappa == 0.0
    empty = agreement([])
    assert empty.n == 0 and empty.accuracy is None
    for a in (nothing, only_pass, empty):
        assert not any(isinstance(v, float) and math.isnan(v) for v in a.to_dict().values())


def test_kappa_when_chance_agreement_is_certain() -> None:
    assert cohen_kappa([("pass", "pass")] * 7) == 1.0  # pe == 1 and po == 1
    assert cohen_kappa([]) is None


def test_positive_label_is_configurable() -> None:
    a = agreement(pairs_from({"yes": {"yes": 3, "no": 1}, "no": {"no": 4}}), positive="yes")
    assert a.tpr == pytest.approx(0.75) and a.tnr == 1.0 and a.positive == "yes"


def _v(label: str | None, status: str = "ok") -> Verdict:
    common = {"trace_id": "t", "judge": "j", "judge_version": "1", "rubric_hash": "h"}
    if status == "ok":
        return Verdict(label=label, score=0.5, **common)
    return Verdict(status=status, status_reason="x", **common)  # type: ignore[arg-type]


def test_tier_disagreement_over_cases_both_tiers_scored() -> None:
    cheap = [_v("pass"), _v("fail"), _v("pass"), _v(None, "unscored"), _v("fail")]
    strong = [_v("pass"), _v("pass"), _v(None, "error"), _v("fail"), _v("pass")]
    assert tier_disagreement(cheap, strong) == pytest.approx(2 / 3)  # cases 0, 1, 4 comparable
    assert tier_disagreement([_v(None, "error")], [_v("pass")]) is None
    with pytest.raises(ValueError):
        tier_disagreement(cheap, strong[:2])


# ---- golden files ------------------------------------------------------------------------------


def _cases(n: int = 6) -> list[GoldenCase]:
    out = []
    for i in range(n):
        failing = i % 3 == 0
        trace = build_trace(f"question {i}", "Sorry." if failing else "Done.",
                            "ERROR: down" if failing else '{"ok": true}', tool_error=failing, seed=i)  # fmt: skip
        meta = {"decision": {"class": "suspected_failure", "p": 1.0}, "failed_gates": [], "signals": [{"s": i}]}
        out.append(GoldenCase(f"c{i}", trace, meta, "fail" if failing else "pass"))
    return out


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_golden_file_round_trip(tmp_path: Path) -> None:
    cases = _cases()
    path = _write(tmp_path / "g.jsonl", [golden_line(c.case_id, c.label, c.trace, c.meta) for c in cases])
    loaded = load_golden(path)
    assert [(c.case_id, c.label) for c in loaded] == [(c.case_id, c.label) for c in cases]
    for a, b in zip(cases, loaded, strict=True):
        assert b.trace.trace_id == a.trace.trace_id
        assert [s.span_id for s in b.trace.spans] == [s.span_id for s in a.trace.spans]
        assert [s.tool_result for s in b.trace.spans] == [s.tool_result for s in a.trace.spans]
        assert b.meta == a.meta
    assert golden_hash(loaded) == golden_hash(cases)


def test_golden_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    cases = _cases()
    lines = [golden_line(c.case_id, c.label, c.trace, c.meta) for c in cases]
    # other key order, indentation inside the line, other line order, blank lines: same set
    shuffled = [json.dumps(dict(reversed(list(json.loads(x).items()))), indent=None) for x in reversed(lines)]
    other = load_golden(_write(tmp_path / "other.jsonl", ["", *shuffled, ""]))
    assert golden_hash(other) == golden_hash(cases)
    relabeled = [GoldenCase(c.case_id, c.trace, c.meta, "pass") for c in cases]
    assert golden_hash(relabeled) != golden_hash(cases)
    assert golden_hash(cases[:-1]) != golden_hash(cases)
    assert len(golden_hash(cases)) == 64


def test_checked_in_golden_set_round_trips_byte_for_byte() -> None:
    lines = GOLDEN.read_text(encoding="utf-8").splitlines()
    cases = load_golden(GOLDEN)
    assert len(cases) == 40
    assert sum(c.label == "fail" for c in cases) == 16
    assert [golden_line(c.case_id, c.label, c.trace, c.meta) for c in cases] == lines


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('["a"]', "expected an object"),
        ('{"id": "x", "label": "pass"}', "missing \\['envelope'\\]"),
        ('{"id": "x", "label": 1, "envelope": {}}', "label must be"),
        ('{"id": "", "label": "pass", "envelope": {}}', "id must be"),
        ('{"id": "x", "label": "pass", "envelope": "text"}', "envelope must be"),
        ('{"id": "x", "label": "pass", "envelope": {"format": "other"}}', "envelope is not a valid"),
        ('{"id": "x", "label": "pass", "envelope": {"format": "tracejudge.to_judge.v1"}}', "envelope is not a valid"),
        ("DUPLICATE", "duplicate id 'c0' \\(first on line 1\\)"),
    ],
)
def test_bad_golden_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    c = _cases(1)[0]
    first = golden_line(c.case_id, c.label, c.trace, c.meta)
    path = _write(tmp_path / "bad.jsonl", [first, first if line == "DUPLICATE" else line])
    with pytest.raises(GoldenError, match=re.escape(f"{path}:2: ") + message):
        load_golden(path)


def test_empty_or_missing_golden_file(tmp_path: Path) -> None:
    with pytest.raises(GoldenError, match="no cases"):
        load_golden(_write(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(GoldenError, match="cannot read"):
        load_golden(tmp_path / "nope.jsonl")


# ---- running a golden set ----------------------------------------------------------------------


def test_run_golden_keeps_case_order_bounds_concurrency_and_scores() -> None:
    cases = load_golden(GOLDEN)
    in_flight, peak = 0, 0

    async def judge(trace: Trace, meta: Mapping[str, Any]) -> Verdict:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        i = int(next(s for s in trace.spans if s.input_messages).input_messages[0].content[5:7])
        await asyncio.sleep(0.001 * (40 - i))  # later cases finish first
        in_flight -= 1
        common = {"trace_id": trace.trace_id, "judge": "task_completion", "judge_version": "1", "rubric_hash": "h"}
        if i in (3, 30):
            return Verdict.unscored(reason="invalid_output: not JSON", **common)
        label = "fail" if i < 10 else "pass"  # misses the failures 10..15
        return Verdict(label=label, score=0.9, **common)

    a, verdicts = asyncio.run(run_golden(judge, cases, concurrency=4))
    assert peak == 4
    assert [v.trace_id for v in verdicts] == [c.trace.trace_id for c in cases]
    # scored: fail 15 (judge fail 9: 0-9 without 3; pass 6: 10-15); pass 23 (all pass; 30 unscored)
    assert (a.n, a.n_scored) == (40, 38)
    assert a.confusion == {"fail": {"fail": 9, "pass": 6}, "pass": {"pass": 23}}
    assert a.accuracy == pytest.approx(32 / 38)
    assert a.tpr == pytest.approx(9 / 15) and a.tnr == 1.0
    po, pe = Fraction(32, 38), Fraction(15 * 9 + 23 * 29, 38 * 38)
    assert a.kappa == pytest.approx(float((po - pe) / (1 - pe)), abs=1e-12)
