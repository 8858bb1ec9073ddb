"""The judging configuration (``judging.yaml``): providers, model tiers, which rubrics run,
cascade, budget, cache, trust (calibration floors, drift, flake quarantine).

Example::

    providers:
      - {name: openai, type: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY,
         structured_output: true}
    tiers:   # each tier's price: its own price_in_per_1m / price_out_per_1m, else prices_file / stream/prices.yaml
      cheap:  {provider: openai, model: gpt-4o-mini-2024-07-18}
      strong: {provider: openai, model: gpt-4o-2024-08-06, price_in_per_1m: 2.50, price_out_per_1m: 10.00}
    rubrics_dir: rubrics/          # your rubrics (relative to this file); built-ins are always available
    judges: [task_completion, tool_use_correctness]   # which rubrics run (default: every built-in)
    cascade: {escalate_below: 0.75, always_strong_for: {failed_gates: ["tool_*"]}}
    budget: {period_s: 86400, global_usd: 50, per_judge_usd: {task_completion: 20}}

Invalid configuration raises :class:`JudgingConfigError` naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from judges.providers.config import ProviderSpec, both_prices_or_neither
from judges.providers.openai_compat import is_reasoning_model
from judges.pricing import tier_prices
from judges.rubric import AppliesTo, Rubric, builtin_rubrics, load_rubrics


class JudgingConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierSpec(_Strict):
    provider: str
    model: str = Field(min_length=1, description="pinned model name, recorded on every verdict")
    #: USD per 1M tokens of ``model``; omitted: the provider's price, else the price table's (judges/pricing.py)
    price_in_per_1m: float | None = Field(None, ge=0, allow_inf_nan=False)
    price_out_per_1m: float | None = Field(None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _both_prices(self) -> Self:
        return both_prices_or_neither(self)


class CascadeSpec(_Strict):
    #: escalate to the next tier when the cheap verdict's confidence is below this. Confidence is
    #: ``score`` for the rubric's first label (the one that fully meets the criteria, e.g. pass)
    #: and ``1 - score`` for any other label.
    escalate_below: float = Field(0.75, ge=0.0, le=1.0)
    #: traces of these classes / gates / services always get the strongest tier too
    always_strong_for: AppliesTo | None = None
    #: escalate when the cheap verdict is unscored or errored (not when the budget forbids it)
    escalate_on_failure: bool = True


class BudgetSpec(_Strict):
    period_s: float = Field(86400.0, gt=0, description="budget period; UTC-aligned (86400 = per day)")
    global_usd: float | None = Field(None, ge=0, description="USD per period, all judges; None = unlimited")
    per_judge_usd: dict[str, float] = Field(default_factory=dict)
    #: degradation ladder, as fractions of a partition's share spent (or reserved):
    stop_success_at: float = Field(0.5, ge=0.0, le=1.0, description="stop judging success samples")
    cheap_only_at: float = Field(0.8, ge=0.0, le=1.0, description="no escalation to stronger tiers")
    #: at 1.0 (or when the next call's estimate does not fit) failures are deferred to the backlog

    @model_validator(mode="after")
    def _ladder(self) -> Self:
        if self.stop_success_at > self.cheap_only_at:
            raise ValueError("stop_success_at must not exceed cheap_only_at (the ladder's order)")
        return self


class FlakeSpec(_Strict):
    fraction: float = Field(0.0, ge=0.0, le=1.0, description="share of judged traces judged a second time")
    max_disagreement: float = Field(0.1, ge=0.0, le=1.0)
    min_pairs: int = Field(20, ge=1)


class DriftSpec(_Strict):
    reference_sets: dict[str, Path] = Field(default_factory=dict, description="judge -> golden JSONL (frozen)")
    interval_s: float = Field(3600.0, gt=0)
    max_drop: float = Field(0.1, ge=0.0, le=1.0, description="alert when accuracy falls this far below baseline")


class CalibrationSpec(_Strict):
    #: judge -> minimum Cohen's kappa on its golden set; below it the judge version is monitoring_only
    min_kappa: dict[str, float] = Field(default_factory=dict)
    default_min_kappa: float | None = Field(None, ge=-1.0, le=1.0)
    #: cheap vs strong tier disagreement on calibration data above which every trace escalates
    max_tier_disagreement: float = Field(0.2, ge=0.0, le=1.0)
    positive_label: str = Field("fail", description="the label counted as positive for TPR/TNR")


class AlertsSpec(_Strict):
    """On-call alerts (``stream.alerts.AlertEngine``): a judge's estimated pass rate dropping
    significantly against its trailing baseline, spend crossing budget thresholds, and judge trust
    alerts (drift, quarantine, paused), posted as Slack-compatible webhooks."""

    enabled: bool = True
    webhook_url: str | None = Field(None, description="Slack-compatible incoming webhook (http or https)")
    webhook_url_env: str | None = Field(None, description="env var holding the webhook URL (preferred: it is a secret)")
    dashboard_base_url: str | None = Field(None, description="e.g. https://tracejudge.example.com; links /dashboard")
    interval_s: float = Field(60.0, ge=0, description="tick() evaluates at most this often")
    current_window_s: float = Field(3600.0, gt=0, description="pass rate now: traces completed in the last ...")
    baseline_window_s: float = Field(86400.0, gt=0, description="trailing baseline: the window before the current one")
    min_samples: int = Field(30, ge=1, description="ok verdicts needed in each window before comparing")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="confidence level of both intervals")
    method: Literal["poststratified", "hajek", "ht"] = "poststratified"
    min_drop: float = Field(0.0, ge=0.0, le=1.0, description="also require baseline rate - current rate >= this")
    budget_thresholds: list[float] = Field(default_factory=lambda: [0.8, 1.0], description="fractions of a budget")
    judge_alert_lookback_s: float = Field(86400.0, gt=0, description="judge_alerts rows older than this are ignored")
    cooldown_s: float = Field(3600.0, ge=0, description="a firing alert is re-posted at most this often")
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_max_attempts: int = Field(3, ge=1, le=10)
    webhook_backoff_s: float = Field(0.5, ge=0)
    max_examples: int = Field(5, ge=0, le=20, description="failing traces listed in a pass-rate alert")

    @model_validator(mode="after")
    def _valid(self) -> Self:
        for name in ("webhook_url", "dashboard_base_url"):
            url = getattr(self, name)
            if url is not None and (not url.startswith(("http://", "https://")) or any(c in url for c in "|<> \n")):
                raise ValueError(f"{name}: must be an http(s) URL without spaces, '|', '<' or '>'")
        t = self.budget_thresholds
        if any(not 0.0 < x <= 10.0 for x in t) or sorted(set(t)) != t:
            raise ValueError("budget_thresholds: increasing fractions in (0, 10], e.g. [0.8, 1.0]")
        return self


class JudgingConfig(_Strict):
    providers: list[ProviderSpec] = Field(min_length=1)
    tiers: dict[str, TierSpec] = Field(min_length=1, description="tier name -> provider + pinned model; order = escalation order")
    rubrics_dir: Path | None = None
    prices_file: Path | None = Field(None, description="model prices over stream/prices.yaml (judges/pricing.py)")
    judges: list[str] | None = Field(None, description="rubrics to run; None = every built-in and user rubric")
    cascade: CascadeSpec = Field(default_factory=CascadeSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    cache: bool = True
    max_in_flight: int = Field(16, ge=1, le=4096, description="concurrent judge calls per worker")
    batch_max_messages: int = Field(64, ge=1)
    pause_probe_s: float = Field(300.0, gt=0, description="after a config error (401/403/404), retry after this")
    backlog_drain_interval_s: float = Field(30.0, gt=0)
    ledger_flush_s: float = Field(0.2, gt=0)
    flake: FlakeSpec = Field(default_factory=FlakeSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    max_value_chars: int = Field(8000, ge=200)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError(f"providers: duplicate names {names}")
        for tier, spec in self.tiers.items():
            if spec.provider not in names:
                raise ValueError(f"tiers.{tier}.provider: {spec.provider!r} is not one of the providers {names}")
        return self

    def rubrics(self) -> dict[str, Rubric]:
        """The rubrics that run: built-ins plus ``rubrics_dir`` (a user rubric may replace a built-in
        of the same name), filtered by ``judges``; each rubric's tiers must be configured."""
        found = builtin_rubrics()
        if self.rubrics_dir is not None:
            found.update(load_rubrics(self.rubrics_dir))
        if self.judges is not None:
            unknown = sorted(set(self.judges) - found.keys())
            if unknown:
                raise JudgingConfigError(f"judges: unknown rubrics {unknown}; known: {sorted(found)}")
            found = {n: found[n] for n in self.judges}
        kinds = {p.name: p.type for p in self.providers}
        for rubric in found.values():
            tiers = [t for t in rubric.tiers if t in self.tiers]
            if not tiers:
                raise JudgingConfigError(
                    f"rubric {rubric.name!r} runs on tiers {rubric.tiers}, none of which is configured "
                    f"(tiers: {sorted(self.tiers)})")  # fmt: skip
            for t in tiers:  # refused with HTTP 400 on every call, each an error verdict: say so now
                spec = self.tiers[t]
                if kinds[spec.provider] == "openai" and is_reasoning_model(spec.model) and rubric.params.temperature != 1.0:
                    raise JudgingConfigError(
                        f"rubric {rubric.name!r} on tier {t!r}: {spec.model} is an OpenAI reasoning model, which takes "
                        f"only temperature 1 (the rubric's params.temperature is {rubric.params.temperature}); give "
                        "the rubric temperature 1 or the tier another model")  # fmt: skip
        return found

    def tier_order(self, rubric: Rubric) -> list[str]:
        """The rubric's tiers that are configured, in the order of ``tiers`` (cheapest first)."""
        return [t for t in self.tiers if t in rubric.tiers]

    def min_kappa(self, judge: str) -> float | None:
        return self.calibration.min_kappa.get(judge, self.calibration.default_min_kappa)


def parse_judging_config(data: Any, source: str = "<judging config>", base_dir: Path | None = None) -> JudgingConfig:
    if not isinstance(data, dict):
        raise JudgingConfigError(f"{source}: expected a mapping at the top level")
    try:
        cfg = JudgingConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors()
        )
        raise JudgingConfigError(f"{source}: {problems}") from None
    if base_dir is not None:
        updates: dict[str, Any] = {}
        for name in ("rubrics_dir", "prices_file"):
            path = getattr(cfg, name)
            if path is not None and not path.is_absolute():
                updates[name] = base_dir / path
        refs = {k: (v if v.is_absolute() else base_dir / v) for k, v in cfg.drift.reference_sets.items()}
        if refs != cfg.drift.reference_sets:
            updates["drift"] = cfg.drift.model_copy(update={"reference_sets": refs})
        if updates:
            cfg = cfg.model_copy(update=updates)
    try:
        cfg.rubrics()
        tier_prices(cfg)  # every tier priced, unambiguously
    except (JudgingConfigError, ValueError, OSError) as exc:
        raise JudgingConfigError(f"{source}: {exc}") from None
    return cfg


def load_judging_config(path: str | Path) -> JudgingConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JudgingConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise JudgingConfigError(f"{path}: (yaml): {exc}") from None
    return parse_judging_config(data, str(path), base_dir=path.parent)
