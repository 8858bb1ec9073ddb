"""Finance, the agents' side and prices: stream.costs.agent_spend (LLM spans priced per model,
unpriced models reported and never counted as zero), the agent_llm_usage_daily view, and the price
table of stream.prices (the dated default table, user files that win or replace the defaults,
and invalid price files), on real embedded ClickHouse."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from stream.costs import Window, agent_spend
from stream.prices import PriceError, default_price_file, load_prices
from stream.store import ClickHouseStore
from tests.stream.costs_support import D2, PRICES_YAML, SPAN_COLS, seed_agents, span


# ---- agents' own spend -------------------------------------------------------------------------
def test_agent_spend_is_priced_per_model_and_unpriced_is_never_zero(store: ClickHouseStore, tmp_path: Path) -> None:
    seed_agents(store)
    (tmp_path / "p.yaml").write_text(PRICES_YAML)
    prices = load_prices(tmp_path / "p.yaml")
    rep = agent_spend(store.query, store.database, ("service", "agent", "model"), prices)
    got = {r.key: (r.llm_calls, r.input_tokens, r.output_tokens, r.cost_usd, r.unpriced_models, r.calls_without_usage) for r in rep.rows}
    assert got == {
        ("batch", "summarizer", "MODEL-A"): (1, 4_000_000, 0, 2.0, (), 0),
        ("checkout", "planner", ""): (1, 7, 3, None, ("",), 0),
        ("checkout", "planner", "model-a-2026"): (1, 1_000_000, 500_000, 1.5, (), 0),  # response model wins
        ("checkout", "planner", "model-b"): (2, 2_000_000, 1_000_000, 21.0, (), 1),
        ("checkout", "planner", "secret-model"): (1, 300, 20, None, ("secret-model",), 0),
    }
    t = rep.total
    assert (t.llm_calls, t.cost_usd, t.unpriced_models, t.unpriced_input_tokens, t.unpriced_output_tokens) == (6, 24.5, ("", "secret-model"), 307, 23)
    assert [(u.model, u.llm_calls, u.input_tokens) for u in rep.unpriced] == [("", 1, 7), ("secret-model", 1, 300)]
    assert rep.prices_as_of.startswith("2026-03-01")
    # grouped without the model: priced parts are summed, the unpriced part is named, not zeroed
    by_team = {r.key: r for r in agent_spend(store.query, store.database, ("team",), prices).rows}
    assert by_team.keys() == {("checkout",), ("ops",), ("payments",)}
    assert by_team[("payments",)].cost_usd == 1.5 and by_team[("ops",)].cost_usd == 2.0
    mixed = by_team[("checkout",)]
    assert (mixed.cost_usd, mixed.fully_priced, mixed.unpriced_models, mixed.unpriced_calls) == (21.0, False, ("", "secret-model"), 2)
    # the window applies to the span start time
    rows = agent_spend(store.query, store.database, ("day",), prices, Window(since=D2)).rows
    assert [(r.key, r.llm_calls, r.cost_usd) for r in rows] == [(("2026-03-03",), 1, 21.0)]


def test_agent_usage_view_counts_llm_spans_once(store: ClickHouseStore) -> None:
    seed_agents(store)
    store.insert("spans", [span("a1", "l1", parent="ar", service="checkout", model="model-a-1", response_model="model-a-2026",
                                tokens=(1_000_000, 500_000), resource={"team": "payments"})], SPAN_COLS)  # replayed span
    _, rows = store.query(f"SELECT agent_name, team, sum(llm_calls), sum(input_tokens) FROM {store.database}.agent_llm_usage_daily "
                          "GROUP BY agent_name, team ORDER BY agent_name, team")  # fmt: skip
    assert rows == [("planner", "checkout", 4, 2_000_307), ("planner", "payments", 1, 1_000_000), ("summarizer", "ops", 1, 4_000_000)]


# ---- price table ---------------------------------------------------------------------------------
def test_default_price_table_is_dated_and_prices_known_models() -> None:
    doc = default_price_file()
    assert datetime.fromisoformat(doc.as_of) and doc.currency == "USD" and len(doc.prices) > 40
    t = load_prices()
    expect = {"gpt-4o-mini-2024-07-18": (0.15, 0.60), "gpt-4o-2024-08-06": (2.5, 10.0), "gpt-4o-2024-05-13": (5.0, 15.0),
              "claude-3-5-sonnet-20241022": (3.0, 15.0), "anthropic.claude-3-haiku-20240307-v1:0": (0.25, 1.25),
              "models/gemini-2.0-flash-001": (0.10, 0.40), "gemini-2.5-flash-lite": (0.10, 0.40), "GPT-4.1-MINI": (0.40, 1.60)}  # fmt: skip
    for model, (pin, pout) in expect.items():
        m = t.lookup(model)
        assert m is not None and (m.price.input_per_1m, m.price.output_per_1m) == (pin, pout), model
    for unknown in ("o1-pro", "gpt-4o-realtime-preview", "claude-opus-4-5-20251101", "llama-3-70b", ""):
        assert t.lookup(unknown) is None, unknown  # a new variant is unpriced, not a neighbour's price


def test_user_prices_win_and_can_replace_defaults(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text('as_of: 2026-01-15\nprices:\n  "gpt-4o-mini*": {input_per_1m: 0.125, output_per_1m: 0.5}\n'
                 '  "gpt-*": {input_per_1m: 9, output_per_1m: 9}\n  "GPT-4O-MINI-2024-07-18": {input_per_1m: 1, output_per_1m: 1}\n')  # fmt: skip
    t = load_prices(p)
    assert t.lookup("gpt-4o-mini-2024-07-18").pattern == "gpt-4o-mini-2024-07-18"  # exact beats globs
    assert t.lookup("gpt-4o-mini-x").price.input_per_1m == 0.125  # most literal characters wins
    assert t.lookup("gpt-4.1").price.input_per_1m == 9  # the user's broad glob beats the defaults
    m = t.lookup("claude-3-5-haiku-20241022")
    assert m.table == "default" and m.price.output_per_1m == 4.0
    assert t.as_of == f"2026-01-15 ({p}); {default_price_file().as_of} (default)"
    assert t.cost("gpt-4o-mini-x", 2_000_000, 1_000_000) == 0.75 and t.cost("nope", 1, 1) is None
    p.write_text(PRICES_YAML)
    assert load_prices(p).lookup("gpt-4o") is None  # replace_defaults


@pytest.mark.parametrize("text, match", [
    ("prices: {a: {input_per_1m: 1, output_per_1m: 1}}", "as_of"),
    ("as_of: x\nprices: {a: {input_per_1m: -1, output_per_1m: 1}}", "greater than or equal"),
    ("as_of: x\ncurrency: EUR\nprices: {a: {input_per_1m: 1, output_per_1m: 1}}", "USD"),
    ("as_of: x\nprices: {A: {input_per_1m: 1, output_per_1m: 1}, a: {input_per_1m: 2, output_per_1m: 2}}", "duplicate"),
    ("as_of: x\nprices: {a: {input_per_1m: .inf, output_per_1m: 1}}", "finite"),
    ("as_of: x\nprices: {a: {input: 1, output_per_1m: 1}}", "prices.a"),
    ("as_of: [unclosed", "yaml"),
], ids=["no-date", "negative", "currency", "duplicate", "infinite", "unknown-field", "bad-yaml"])  # fmt: skip
def test_invalid_price_files_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(PriceError, match=match):
        load_prices(p)
