"""`tracejudge check`: settings, policy and judging config validated offline, as the worker would."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.stream.test_cli import tracejudge

PROVIDER = {"name": "openai", "type": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"}


def write(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_valid_judging_file_prints_each_tier_with_its_price_and_where_it_came_from(tmp_path: Path) -> None:
    judging = write(tmp_path / "judging.yaml", {
        "providers": [PROVIDER], "judges": ["task_completion"], "budget": {"global_usd": 20},
        "tiers": {"cheap": {"provider": "openai", "model": "gpt-4o-mini-2024-07-18"},
                  "strong": {"provider": "openai", "model": "gpt-4o-2024-08-06"}}})  # fmt: skip
    run = tracejudge("check", "--judging", str(judging), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "policy built-in default: version" in run.stdout
    lines = {ln.split("│")[1].strip(): ln for ln in run.stdout.splitlines() if ln.count("│") >= 6}
    assert "0.15" in lines["cheap"] and "0.6" in lines["cheap"] and "gpt-4o-mini-20*" in lines["cheap"]
    assert "2.5" in lines["strong"] and "10" in lines["strong"] and "stream/prices.yaml" in lines["strong"]
    assert "task_completion (cheap -> strong)" in run.stdout and "USD 20 per 86400 s" in run.stdout


def test_an_unpriced_tier_or_a_broken_policy_fails_with_the_reason(tmp_path: Path) -> None:
    judging = write(tmp_path / "judging.yaml", {
        "providers": [PROVIDER], "tiers": {"cheap": {"provider": "openai", "model": "my-finetune"}}})
    run = tracejudge("check", "--judging", str(judging), cwd=tmp_path)
    assert run.returncode == 1
    assert "tiers.cheap: no price for model 'my-finetune'" in run.stderr
    policy = write(tmp_path / "policy.yaml", {"gates": [{"name": "x", "type": "no_such_gate_type"}]})
    run = tracejudge("check", "--policy", str(policy), cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.startswith("policy:"), run.stdout + run.stderr
    assert tracejudge("check", cwd=tmp_path).stdout.count("no judging_file configured") == 1
