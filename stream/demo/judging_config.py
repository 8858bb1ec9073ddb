"""The demo's judging configuration: OpenAI (gpt-4o-mini -> gpt-4o at list prices) when
``OPENAI_API_KEY`` is set, else the SIMULATED local provider (:mod:`stream.demo.sim_provider`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from stream.demo.sim_provider import SIM_API_KEY_ENV

Mode = Literal["openai", "simulated"]

OPENAI_CHEAP, OPENAI_STRONG = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"
SIM_CHEAP, SIM_STRONG = "sim-cheap", "sim-strong"
#: USD per 1M tokens (input, output): OpenAI list prices of the pinned models
PRICES = {"cheap": (0.15, 0.60), "strong": (2.50, 10.00)}
DEMO_JUDGES = ["task_completion", "tool_use_correctness"]
DEMO_BUDGET_USD = 0.50


def judging_mode(env: Mapping[str, str] | None = None) -> Mode:
    """``openai`` when ``OPENAI_API_KEY`` is set and ``TRACEJUDGE_DEMO_SIMULATE`` is not ``1``."""
    env = os.environ if env is None else env
    if env.get("OPENAI_API_KEY") and env.get("TRACEJUDGE_DEMO_SIMULATE") != "1":
        return "openai"
    return "simulated"


def _tier(provider: str, model: str, tier: str, priced: bool) -> dict[str, Any]:
    """A tier; ``priced``: with the list prices written out (the simulated models are in no price table)."""
    price_in, price_out = PRICES[tier]
    return {"provider": provider, "model": model,
            **({"price_in_per_1m": price_in, "price_out_per_1m": price_out} if priced else {})}  # fmt: skip


def demo_judging_config(path: Path, sim_url: str | None, env: Mapping[str, str] | None = None) -> tuple[Path, Mode]:
    """Write the demo's judging YAML to ``path``; return ``(path, mode)``.

    ``openai``: the real API (gpt-4o-mini → gpt-4o, list prices, structured output). ``simulated``:
    :class:`SimulatedProvider` at ``sim_url`` (its root or its ``/v1`` base URL), key variable
    ``TRACEJUDGE_SIM_API_KEY``, the same prices written on its tiers so costs look realistic (the
    real models' prices come from stream/prices.yaml, see judges/pricing.py)."""
    mode = judging_mode(env)
    path = Path(path)
    if mode == "openai":
        base, key_env = "https://api.openai.com/v1", "OPENAI_API_KEY"
        models, name = (OPENAI_CHEAP, OPENAI_STRONG), "openai"
        extra: dict[str, Any] = {"structured_output": True}
        header = "# tracejudge demo: judges on the OpenAI API (OPENAI_API_KEY is set). Real calls, real cost,\n" \
                 f"# capped by the budget below (USD {DEMO_BUDGET_USD:.2f} per day).\n"  # fmt: skip
    else:
        if not sim_url:
            raise ValueError("simulated mode needs the simulated provider's URL")
        base = sim_url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        key_env, models, name = SIM_API_KEY_ENV, (SIM_CHEAP, SIM_STRONG), "simulated"
        extra = {"timeout_s": 10.0, "deadline_s": 30.0, "backoff_base_s": 0.2, "backoff_max_s": 2.0}
        header = "# tracejudge demo: SIMULATED judges (stream/demo/sim_provider.py), not a model: a local\n" \
                 "# HTTP server that grades by fixed rules. Costs use OpenAI list prices to look realistic.\n"  # fmt: skip
    doc: dict[str, Any] = {
        "providers": [{"name": name, "type": "openai", "base_url": base, "api_key_env": key_env, **extra}],
        "tiers": {"cheap": _tier(name, models[0], "cheap", priced=mode == "simulated"),
                  "strong": _tier(name, models[1], "strong", priced=mode == "simulated")},
        "judges": list(DEMO_JUDGES),
        "cascade": {"escalate_below": 0.75},
        "budget": {"period_s": 86400, "global_usd": DEMO_BUDGET_USD},
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path, mode
