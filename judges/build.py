"""Building the judges a worker runs from its judging config: one provider client per configured
provider (a provider whose API key is missing becomes one whose every call is a config error, so
its judges pause loudly instead of the worker failing), and per judge its tiers' RubricJudges."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from judges.config import JudgingConfig
from judges.pricing import tier_prices
from judges.providers.base import Provider, ProviderError
from judges.providers.config import build_provider
from judges.rubric_judge import RubricJudge

log = logging.getLogger(__name__)


class MissingKeyProvider:
    """Stands in for a provider whose API key is not set: every call is a config error (pause)."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        self.price_in_per_1m = 0.0
        self.price_out_per_1m = 0.0

    async def complete(self, req: Any) -> Any:
        raise ProviderError("config", self.message)

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return 0.0


def build_providers(cfg: JudgingConfig, env: Mapping[str, str] | None = None) -> dict[str, Provider]:
    out: dict[str, Provider] = {}
    for spec in cfg.providers:
        try:
            out[spec.name] = build_provider(spec, **({"env": env} if env is not None else {}))
        except ProviderError as exc:
            log.error("JUDGE CONFIG: %s — its judges stay paused until this is fixed", exc.message)
            out[spec.name] = MissingKeyProvider(spec.name, exc.message)
    return out


def build_judges(cfg: JudgingConfig, providers: Mapping[str, Provider]) -> dict[str, dict[str, RubricJudge]]:
    prices = tier_prices(cfg)
    for tier, price in prices.items():
        log.info("judge tier %s: %s", tier, price.describe())
    judges: dict[str, dict[str, RubricJudge]] = {}
    for name, rubric in cfg.rubrics().items():
        judges[name] = {
            tier: RubricJudge(rubric, providers[cfg.tiers[tier].provider], cfg.tiers[tier].model, tier,
                              max_value_chars=cfg.max_value_chars, price=prices[tier].price)  # fmt: skip
            for tier in cfg.tier_order(rubric)
        }
    return judges
