"""The demo's judging config (stream/demo/judging_config.py): simulated by default, OpenAI when a key is
set, and a simulated config that reaches the simulated provider over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from judges.config import load_judging_config
from judges.pricing import tier_prices
from judges.rubric_judge import RubricJudge
from judges.verdict import Verdict
from stream.demo.judging_config import demo_judging_config, judging_mode
from stream.demo.sim_provider import SIM_API_KEY_ENV, SimulatedProvider
from tests.stream.demo.test_sim_provider import META, RUBRICS, failing


@pytest.fixture
def sim() -> Iterator[SimulatedProvider]:
    with SimulatedProvider(latency_s=0.0) as server:
        yield server


def test_demo_config_simulated_is_valid_and_reaches_the_server(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                               sim: SimulatedProvider) -> None:  # fmt: skip
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path, mode = demo_judging_config(tmp_path / "judging.yaml", sim.url)
    assert mode == "simulated" and path.read_text().startswith("# tracejudge demo: SIMULATED")
    cfg = load_judging_config(path)
    assert [p.name for p in cfg.providers] == ["simulated"]
    assert all(p.base_url == sim.base_url and p.api_key_env == SIM_API_KEY_ENV for p in cfg.providers)
    assert {t: s.model for t, s in cfg.tiers.items()} == {"cheap": "sim-cheap", "strong": "sim-strong"}
    assert list(cfg.rubrics()) == ["task_completion", "tool_use_correctness"]
    assert cfg.cascade.escalate_below == 0.75 and cfg.budget.global_usd == 0.5
    prices = {t: (p.price.input_per_1m, p.price.output_per_1m, p.source) for t, p in tier_prices(cfg).items()}
    assert prices == {"cheap": (0.15, 0.60, "tiers.cheap"), "strong": (2.50, 10.00, "tiers.strong")}

    async def run() -> Verdict:
        from stream.judging import build_providers

        providers = build_providers(cfg, env={SIM_API_KEY_ENV: "simulated"})
        p = providers[cfg.tiers["strong"].provider]
        try:
            return await RubricJudge(RUBRICS["task_completion"], p, cfg.tiers["strong"].model, "strong",
                                     price=tier_prices(cfg)["strong"].price)(failing(), META)  # fmt: skip
        finally:
            await p.aclose()  # type: ignore[attr-defined]

    v = asyncio.run(run())
    assert (v.status, v.label, v.provider) == ("ok", "fail", "simulated")
    assert v.cost_usd == pytest.approx((v.input_tokens * 2.5 + v.output_tokens * 10.0) / 1e6)


def test_demo_config_openai_when_the_key_is_set(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("TRACEJUDGE_DEMO_SIMULATE", raising=False)
    path, mode = demo_judging_config(tmp_path / "judging.yaml", None)
    assert mode == "openai" and judging_mode() == "openai"
    cfg = load_judging_config(path)
    assert all(p.base_url == "https://api.openai.com/v1" and p.api_key_env == "OPENAI_API_KEY"
               and p.structured_output for p in cfg.providers)  # fmt: skip
    assert {t: s.model for t, s in cfg.tiers.items()} == {"cheap": "gpt-4o-mini-2024-07-18",
                                                          "strong": "gpt-4o-2024-08-06"}  # fmt: skip
    prices = {p.model: (p.price.input_per_1m, p.price.output_per_1m) for p in tier_prices(cfg).values()}
    assert prices == {"gpt-4o-mini-2024-07-18": (0.15, 0.60), "gpt-4o-2024-08-06": (2.50, 10.00)}
    assert all(p.source.startswith("stream/prices.yaml") for p in tier_prices(cfg).values())
    assert cfg.budget.global_usd == 0.5 and list(cfg.rubrics()) == ["task_completion", "tool_use_correctness"]


def test_demo_config_simulate_override(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TRACEJUDGE_DEMO_SIMULATE", "1")
    path, mode = demo_judging_config(tmp_path / "j.yaml", "http://127.0.0.1:9/v1")
    assert mode == "simulated"
    assert all(p.base_url == "http://127.0.0.1:9/v1" for p in load_judging_config(path).providers)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="URL"):
        demo_judging_config(tmp_path / "k.yaml", None)
