"""``tracejudge check``: validate the settings, the policy and the judging config without
starting anything (no Kafka, no ClickHouse, no provider call), and print what a worker would run.

The same loaders the worker uses at start-up, so a file this accepts is one the worker accepts.
Exit 0 when all are valid, 1 with the first problem otherwise. Registered on the shared typer app
by the import at the end of :mod:`stream.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.markup import escape
from rich.table import Table

from stream.cli import ConfigOpt, _settings, app, console, err


def _fail(what: str, exc: Exception) -> NoReturn:
    err.print(f"[red]{escape(what)}: {escape(str(exc))}[/red]", soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def check(
    judging: Optional[Path] = typer.Option(None, "--judging", help="judging YAML (default: judging_file of the settings)"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="policy YAML (default: policy_file of the settings)"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Validate settings, policy and judging config offline; print the gates, tiers and their prices."""
    from judges.config import JudgingConfigError, load_judging_config
    from judges.pricing import tier_prices
    from stream.policy import PolicyError, load_policy

    settings = _settings(config)
    policy_path = policy or settings.policy_file
    try:
        pol = load_policy(policy_path)
    except (PolicyError, OSError) as exc:
        _fail("policy", exc)
    console.print(f"policy {escape(str(policy_path or 'built-in default'))}: version {pol.version}, "
                  f"{len(pol.gates)} gates ({escape(', '.join(g.name for g in pol.gates))}), "
                  f"{len(pol.signals)} signal rules, success sampling {pol.sampling.success.rate:g}", soft_wrap=True)  # fmt: skip
    judging_path = judging or settings.judging_file
    if judging_path is None:
        console.print("judging: no judging_file configured (sampled traces wait in the to_judge topic)")
        return
    try:
        cfg = load_judging_config(judging_path)
        prices = tier_prices(cfg)
        rubrics = cfg.rubrics()
    except (JudgingConfigError, ValueError, OSError) as exc:
        _fail(f"judging {judging_path}", exc)
    table = Table("tier", "provider", "model", "USD / 1M in", "USD / 1M out", "price from", title=f"judging {judging_path}")
    for tier, spec in cfg.tiers.items():
        p = prices[tier]
        table.add_row(escape(tier), escape(spec.provider), escape(spec.model), f"{p.price.input_per_1m:g}",
                      f"{p.price.output_per_1m:g}", escape(p.source))  # fmt: skip
    console.print(table)
    plan: list[Any] = [f"{name} ({' -> '.join(cfg.tier_order(r))})" for name, r in rubrics.items()]
    budget = cfg.budget.global_usd
    console.print(f"judges: {escape(', '.join(plan))}; budget "
                  f"{'unlimited' if budget is None else f'USD {budget:g} per {cfg.budget.period_s:g} s'}", soft_wrap=True)  # fmt: skip
