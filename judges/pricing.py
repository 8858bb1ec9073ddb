"""What a judge tier's calls cost: the price of the model the tier pins.

Verdict and call rows record ``cost_usd``; the finance views, the hard budget and its degradation
ladder all read it. A price is therefore resolved once per tier, when the judging config is
loaded, and the first of these that applies wins:

1. the tier's own ``price_in_per_1m`` / ``price_out_per_1m``;
2. its provider's, when the provider entry sets them (one provider entry per priced model). A
   provider price that would apply to tiers pinning *different* models is a config error: one
   price cannot be right for ``gpt-4o-mini`` and ``gpt-4o`` both;
3. the price table, looked up by the pinned model: ``prices_file`` (the format of
   ``tracejudge costs --prices``) over the built-in ``stream/prices.yaml``;
4. otherwise a config error naming the tier. An unknown model is never priced at $0 by default
   (every cost and the budget would silently read zero); a self-hosted model gets an explicit 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream.prices import ModelPrice, PriceError, load_prices

if TYPE_CHECKING:
    from judges.config import JudgingConfig


class PricingError(ValueError):
    """A tier whose price cannot be resolved, or is ambiguous (the message names the tier)."""


@dataclass(frozen=True)
class TierPrice:
    model: str
    price: ModelPrice
    source: str  # where it came from: "tiers.cheap", "providers.openai", "stream/prices.yaml entry 'gpt-4o-20*'"

    def describe(self) -> str:
        return (f"{self.model} at ${self.price.input_per_1m:g} / ${self.price.output_per_1m:g} per 1M "
                f"input / output tokens ({self.source})")  # fmt: skip


def _explicit(spec: object) -> ModelPrice | None:
    p_in, p_out = getattr(spec, "price_in_per_1m", None), getattr(spec, "price_out_per_1m", None)
    if p_in is None or p_out is None:
        return None
    return ModelPrice(input_per_1m=p_in, output_per_1m=p_out)


def tier_prices(cfg: JudgingConfig) -> dict[str, TierPrice]:
    """tier -> its price, resolved as the module docstring says; raises :class:`PricingError`."""
    providers = {p.name: p for p in cfg.providers}
    out: dict[str, TierPrice] = {}
    unpriced: dict[str, str] = {}
    for tier, spec in cfg.tiers.items():
        own = _explicit(spec)
        if own is not None:
            out[tier] = TierPrice(spec.model, own, f"tiers.{tier}")
            continue
        by_provider = _explicit(providers[spec.provider])
        if by_provider is not None:
            models = sorted({t.model for t in cfg.tiers.values()
                             if t.provider == spec.provider and _explicit(t) is None})  # fmt: skip
            if len(models) > 1:
                raise PricingError(
                    f"providers.{spec.provider}: its price_in_per_1m / price_out_per_1m would price the models "
                    f"{models} alike; set price_in_per_1m and price_out_per_1m on each tier instead")  # fmt: skip
            out[tier] = TierPrice(spec.model, by_provider, f"providers.{spec.provider}")
            continue
        unpriced[tier] = spec.model
    if unpriced:
        try:
            table = load_prices(cfg.prices_file)
        except PriceError as exc:
            raise PricingError(f"prices_file: {exc}") from None
        for tier, model in unpriced.items():
            match = table.lookup(model)
            if match is None:
                raise PricingError(
                    f"tiers.{tier}: no price for model {model!r} (not in "
                    f"{'prices_file or ' if cfg.prices_file else ''}stream/prices.yaml); set the tier's "
                    f"price_in_per_1m and price_out_per_1m (0 for a self-hosted model) or add it to a prices_file")  # fmt: skip
            where = "stream/prices.yaml" if match.table == "default" else match.table
            out[tier] = TierPrice(model, match.price, f"{where} entry {match.pattern!r}")
    return {t: out[t] for t in cfg.tiers}
