"""The judging YAML: references checked, rubrics resolved, errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from judges.config import JudgingConfigError, load_judging_config, parse_judging_config

BASE = {
    "providers": [{"name": "p", "type": "openai", "base_url": "http://x/v1", "api_key_env": "K"}],
    "tiers": {"cheap": {"provider": "p", "model": "m-small", "price_in_per_1m": 0.1, "price_out_per_1m": 0.4},
              "strong": {"provider": "p", "model": "m-large", "price_in_per_1m": 2.0, "price_out_per_1m": 8.0}},
}


def test_defaults_run_every_builtin_on_configured_tiers() -> None:
    cfg = parse_judging_config(BASE)
    rubrics = cfg.rubrics()
    assert set(rubrics) == {"task_completion", "tool_use_correctness", "groundedness",
                            "frustration_resolution", "refusal_correctness"}  # fmt: skip
    assert cfg.tier_order(rubrics["task_completion"]) == ["cheap", "strong"]
    assert cfg.budget.global_usd is None and cfg.cache


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiers": {"cheap": {"provider": "nope", "model": "m"}}}, "tiers.cheap.provider"),
        ({"judges": ["no_such_rubric"]}, "unknown rubrics"),
        ({"tiers": {"huge": {"provider": "p", "model": "m"}}}, "none of which is configured"),
        ({"budget": {"stop_success_at": 0.9, "cheap_only_at": 0.5}}, "ladder"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_configs_name_the_problem(change: dict, message: str) -> None:
    with pytest.raises(JudgingConfigError, match=message):
        parse_judging_config({**BASE, **change})


def test_user_rubrics_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    rubrics = tmp_path / "rubrics"
    rubrics.mkdir()
    (rubrics / "polite.yaml").write_text(yaml.safe_dump({
        "name": "polite", "version": "1", "template": "Was the answer polite? {final_answer}",
        "variables": {"final_answer": "final_answer"}, "tiers": ["cheap"],
    }))  # fmt: skip
    path = tmp_path / "judging.yaml"
    path.write_text(yaml.safe_dump({**BASE, "rubrics_dir": "rubrics", "judges": ["polite", "task_completion"]}))
    cfg = load_judging_config(path)
    assert list(cfg.rubrics()) == ["polite", "task_completion"]
    assert cfg.tier_order(cfg.rubrics()["polite"]) == ["cheap"]


def test_an_openai_reasoning_model_needs_temperature_1(tmp_path: Path) -> None:
    """o1 / o3 / o4-mini / gpt-5 refuse any temperature but 1 with HTTP 400: every call an error
    verdict. The configuration says so at start instead."""
    strong = {"provider": "p", "model": "o3-2025-04-16", "price_in_per_1m": 2.0, "price_out_per_1m": 8.0}
    with pytest.raises(JudgingConfigError, match=r"rubric '\w+' on tier 'strong': o3-2025-04-16 is an "
                       "OpenAI reasoning model, which takes only temperature 1"):  # fmt: skip
        parse_judging_config({**BASE, "tiers": {**BASE["tiers"], "strong": strong}})
    chat = {**strong, "model": "gpt-5-chat-latest"}  # the chat variant takes temperature 0
    assert parse_judging_config({**BASE, "tiers": {**BASE["tiers"], "strong": chat}}).rubrics()
    rubrics = tmp_path / "rubrics"
    rubrics.mkdir()
    (rubrics / "polite.yaml").write_text(yaml.safe_dump({
        "name": "polite", "version": "1", "template": "Was the answer polite? {final_answer}",
        "variables": {"final_answer": "final_answer"}, "tiers": ["strong"], "params": {"temperature": 1.0},
    }))  # fmt: skip
    cfg = parse_judging_config({**BASE, "tiers": {**BASE["tiers"], "strong": strong}, "rubrics_dir": str(rubrics),
                                "judges": ["polite"]})  # fmt: skip
    assert list(cfg.rubrics()) == ["polite"]
