"""deploy/prometheus/tracejudge-rules.yml: every rule is complete, its expression parses as PromQL
(promql-parser, the Rust parser of GreptimeDB's PromQL engine), and names only metric families the
worker exports (stream/metrics.py SPECS, the table both exporters use), with their own labels and
label values the worker really emits."""

from __future__ import annotations

from typing import Any

import promql_parser
import pytest
import yaml

from schemas.model import CompletionReason
from stream.metrics import SPECS
from tests.deploy.stack import REPO

RULES = REPO / "deploy" / "prometheus" / "tracejudge-rules.yml"
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series
#: exported name (counters with _total) -> labels
FAMILIES = {s.name + ("_total" if s.kind == "counter" else ""): set(s.labels) for s in SPECS}
#: label values the worker emits, where a rule matches on one
VALUES = {"completion_reason": {r.value for r in CompletionReason},
          "level": {"NORMAL", "NO_SUCCESS", "CHEAP_ONLY", "DEFER"}}  # fmt: skip


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def walk(node: Any) -> list[Any]:
    """Every node of a parsed expression."""
    out = [node]
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            out += walk(child)
    for child in getattr(node, "args", None) or ():
        out += walk(child)
    return out


def test_every_rule_is_complete_and_named_once() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) >= 8 and len(names) == len(set(names))
    for r in rules():
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_expression_parses_and_names_exported_families(rule: dict[str, Any]) -> None:
    ast = promql_parser.parse(rule["expr"])  # raises on invalid PromQL
    selectors = [n for n in walk(ast) if type(n).__name__ == "VectorSelector"]
    assert selectors, rule["alert"]
    names = set()
    for vs in selectors:
        names.add(vs.name)
        if vs.name == "up":  # Prometheus' own series for the scrape target
            continue
        assert vs.name in FAMILIES, f"{rule['alert']}: {vs.name} is not a metric the worker exports"
        for m in vs.matchers.matchers:
            assert m.name in FAMILIES[vs.name] | TARGET_LABELS, f"{rule['alert']}: {vs.name} has no label {m.name}"
            if m.name in VALUES:
                assert m.value in VALUES[m.name], f"{rule['alert']}: {m.name}={m.value!r} is never emitted"
    labels = set().union(*(FAMILIES.get(n, set()) for n in names)) | TARGET_LABELS
    for agg in (n for n in walk(ast) if type(n).__name__ == "AggregateExpr"):
        grouping = set(agg.modifier.labels) if agg.modifier is not None else set()
        assert grouping <= labels, f"{rule['alert']}: groups by {grouping - labels}, which its series lack"


def test_the_checks_can_fail() -> None:
    """The same checks reject a misspelt family, an unknown label and a value never emitted."""
    with pytest.raises(ValueError):
        promql_parser.parse("increase(tracejudge_spans_in_total[5m]")
    for expr in ("increase(tracejudge_span_in_total[5m]) > 0",
                 'increase(tracejudge_traces_assembled_total{reason="evicted"}[5m]) > 0',
                 'increase(tracejudge_traces_assembled_total{completion_reason="evict"}[5m]) > 0',
                 "sum by (judge) (increase(tracejudge_spans_in_total[5m])) > 0"):  # fmt: skip
        with pytest.raises(AssertionError):
            test_expression_parses_and_names_exported_families({"alert": "x", "expr": expr})
