"""Each judge tier's price: its own, its provider's, or the price table's — never a silent $0."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from judges.build import build_judges
from judges.config import JudgingConfigError, load_judging_config, parse_judging_config
from judges.pricing import tier_prices
from tests.judges.fake_llm import ScriptedLLM, build_trace

CHEAP, STRONG = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"


def doc(provider: dict[str, Any] | None = None, **tiers: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": [{"name": "p", "type": "openai", "base_url": "http://x/v1", "api_key_env": "K", **(provider or {})}],
        "tiers": tiers or {"cheap": {"provider": "p", "model": CHEAP}, "strong": {"provider": "p", "model": STRONG}},
    }


def prices(data: dict[str, Any]) -> dict[str, tuple[float, float, str]]:
    return {t: (p.price.input_per_1m, p.price.output_per_1m, p.source) for t, p in tier_prices(parse_judging_config(data)).items()}


def test_pinned_models_are_priced_from_the_built_in_table() -> None:
    # the documented layout: one provider, two models; before, both were billed at the provider's (or $0)
    assert prices(doc()) == {"cheap": (0.15, 0.60, "stream/prices.yaml entry 'gpt-4o-mini-20*'"),
                             "strong": (2.50, 10.00, "stream/prices.yaml entry 'gpt-4o-20*'")}  # fmt: skip


def test_a_tier_price_wins_and_zero_is_a_price() -> None:
    got = prices(doc(cheap={"provider": "p", "model": "llama-3.1-8b-local", "price_in_per_1m": 0, "price_out_per_1m": 0},
                     strong={"provider": "p", "model": STRONG, "price_in_per_1m": 2.0, "price_out_per_1m": 8.0}))  # fmt: skip
    assert got == {"cheap": (0.0, 0.0, "tiers.cheap"), "strong": (2.0, 8.0, "tiers.strong")}


def test_a_provider_price_serves_the_one_model_it_is_used_for() -> None:
    one_model = doc({"price_in_per_1m": 1.0, "price_out_per_1m": 3.0}, cheap={"provider": "p", "model": "my-model"})
    assert prices(one_model) == {"cheap": (1.0, 3.0, "providers.p")}
    # a tier with its own price does not count against the provider's
    mixed = doc({"price_in_per_1m": 1.0, "price_out_per_1m": 3.0}, cheap={"provider": "p", "model": "my-model"},
                strong={"provider": "p", "model": STRONG, "price_in_per_1m": 2.5, "price_out_per_1m": 10.0})  # fmt: skip
    assert prices(mixed) == {"cheap": (1.0, 3.0, "providers.p"), "strong": (2.5, 10.0, "tiers.strong")}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (doc(cheap={"provider": "p", "model": "my-finetune"}),
         r"tiers\.cheap: no price for model 'my-finetune' .*0 for a self-hosted model"),
        (doc({"price_in_per_1m": 0.15, "price_out_per_1m": 0.6}),  # one price for gpt-4o-mini and gpt-4o
         r"providers\.p: .* would price the models \['gpt-4o-2024-08-06', 'gpt-4o-mini-2024-07-18'\] alike"),
        (doc({"price_in_per_1m": 0.15}), r"price_in_per_1m is set but price_out_per_1m is not"),
        (doc(cheap={"provider": "p", "model": CHEAP, "price_out_per_1m": 1.0}), r"price_out_per_1m is set but price_in_per_1m"),
        (doc(cheap={"provider": "p", "model": CHEAP, "price_in_per_1m": -1, "price_out_per_1m": 1.0}), r"greater than or equal to 0"),
        (doc(cheap={"provider": "p", "model": CHEAP, "price_in_per_1m": float("nan"), "price_out_per_1m": 1.0}), r"finite"),
    ],
)
def test_an_unpriced_or_ambiguous_tier_is_a_config_error(data: dict[str, Any], message: str) -> None:
    with pytest.raises(JudgingConfigError, match=message):
        parse_judging_config(data)


def test_a_prices_file_next_to_the_judging_file_overrides_the_table(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_text(yaml.safe_dump({
        "as_of": "2026-11-01", "prices": {"gpt-4o-mini*": {"input_per_1m": 0.12, "output_per_1m": 0.48},
                                          "my-finetune": {"input_per_1m": 3.0, "output_per_1m": 12.0}}}))  # fmt: skip
    data = {**doc(cheap={"provider": "p", "model": CHEAP}, strong={"provider": "p", "model": "my-finetune"}),
            "prices_file": "prices.yaml"}  # fmt: skip
    (tmp_path / "judging.yaml").write_text(yaml.safe_dump(data))
    cfg = load_judging_config(tmp_path / "judging.yaml")
    got = {t: (p.price.input_per_1m, p.price.output_per_1m) for t, p in tier_prices(cfg).items()}
    assert got == {"cheap": (0.12, 0.48), "strong": (3.0, 12.0)}
    assert tier_prices(cfg)["cheap"].source == f"{tmp_path / 'prices.yaml'} entry 'gpt-4o-mini*'"
    (tmp_path / "prices.yaml").write_text("as_of: 2026-11-01\nprices: {}\n")
    with pytest.raises(JudgingConfigError, match=r"prices_file: .*prices"):
        load_judging_config(tmp_path / "judging.yaml")


def test_the_built_judges_charge_each_call_at_its_tier_model_price() -> None:
    cfg = parse_judging_config({**doc(), "judges": ["task_completion"]})
    answer = '{"label": "pass", "score": 0.9, "explanation": "done", "evidence": []}'
    llm = ScriptedLLM([answer, answer])  # its own price (0.15 / 0.60) must not be what is charged for gpt-4o
    judges = build_judges(cfg, {"p": llm})["task_completion"]
    trace = build_trace("Where is my order?", "It ships tomorrow.", "order 42: shipped")
    cheap = asyncio.run(judges["cheap"](trace, {}))
    strong = asyncio.run(judges["strong"](trace, {}))
    assert cheap.status == strong.status == "ok" and cheap.input_tokens > 0
    assert (cheap.model, cheap.cost_usd) == (CHEAP, pytest.approx((cheap.input_tokens * 0.15 + cheap.output_tokens * 0.60) / 1e6))
    assert (strong.model, strong.cost_usd) == (STRONG, pytest.approx((strong.input_tokens * 2.5 + strong.output_tokens * 10.0) / 1e6))
    # the budget reserves at the same price: the strong tier's estimate is the cheap one's x ~16
    values = {"x": "y" * 3000}
    assert judges["strong"].estimate_usd(values) / judges["cheap"].estimate_usd(values) == pytest.approx(2.5 / 0.15)
