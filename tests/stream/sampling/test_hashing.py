"""unit_hash / keep: stable across calls and processes, uniform, nested, salt-independent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.sampling.hashing import keep, unit_hash
from stream.sampling.rules import TraceFacts
from stream.sampling.sampler import Sampler, SamplingSpec

REPO = Path(__file__).resolve().parents[3]
IDS = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(100_000)]


def test_known_value_pins_the_algorithm() -> None:
    # changing the hash re-draws every sampling decision; it must never happen by accident
    assert unit_hash("tracejudge", "0af7651916cd43dd8448eb211c80319c") == 0.7773941946261427
    assert unit_hash("other", "0af7651916cd43dd8448eb211c80319c") == 0.10051199599397731


def test_unit_hash_is_deterministic_and_in_range() -> None:
    values = [unit_hash("s", t) for t in IDS[:1000]]
    assert values == [unit_hash("s", t) for t in IDS[:1000]]
    assert all(0.0 <= v < 1.0 for v in values)
    assert unit_hash("ab", "c") != unit_hash("a", "bc")  # salt and id are separated


@pytest.mark.parametrize("rate", [0.001, 0.02, 0.1, 0.5, 0.9])
def test_empirical_rate_matches_the_configured_rate(rate: float) -> None:
    kept = sum(keep("tracejudge", t, rate) for t in IDS)
    sd = (len(IDS) * rate * (1 - rate)) ** 0.5
    assert abs(kept - rate * len(IDS)) < 4 * sd, (kept, rate)


def test_hash_is_uniform_over_deciles() -> None:
    counts = [0] * 10
    for t in IDS:
        counts[int(unit_hash("tracejudge", t) * 10)] += 1
    expected = len(IDS) / 10
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 27.9, counts  # 99.9 % quantile of chi-square with 9 degrees of freedom


@pytest.mark.parametrize("trace_id", IDS[:50])
def test_rate_edges(trace_id: str) -> None:
    assert keep("s", trace_id, 1.0) and keep("s", trace_id, 1.5)
    assert not keep("s", trace_id, 0.0) and not keep("s", trace_id, -0.1)
    assert keep("s", trace_id, 0.3) == (unit_hash("s", trace_id) < 0.3)


def test_samples_are_nested_and_salts_independent() -> None:
    low = {t for t in IDS if keep("a", t, 0.02)}
    high = {t for t in IDS if keep("a", t, 0.05)}
    assert low <= high  # raising a rate keeps everything sampled before
    other = {t for t in IDS if keep("b", t, 0.05)}
    overlap = len(high & other) / len(IDS)
    assert abs(overlap - 0.05**2) < 4 * (0.05**2 / len(IDS)) ** 0.5


_CHILD = """
import json, sys
from stream.sampling.hashing import unit_hash
from stream.sampling.rules import TraceFacts
from stream.sampling.sampler import Sampler, SamplingSpec
spec, ids = json.loads(sys.stdin.read())
sampler = Sampler(SamplingSpec.model_validate(spec), "v")
out = []
for t in ids:
    d = sampler.decide(TraceFacts(t, agent=t[0]))
    out.append([unit_hash("tracejudge", t), [d.sample_class, d.rule, d.p, d.sampled, d.stratum]])
print(json.dumps(out))
"""
SPEC = {"success": {"rate": 0.3, "strata": [{"name": "a-agents", "match": {"agent": "a"}, "rate": 0.6}]}}


def _in_process(ids: list[str]) -> list[list[object]]:
    sampler = Sampler(SamplingSpec.model_validate(SPEC), "v")
    out = []
    for t in ids:
        d = sampler.decide(TraceFacts(t, agent=t[0]))
        out.append([unit_hash("tracejudge", t), [d.sample_class, d.rule, d.p, d.sampled, d.stratum]])
    return out


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_decisions_are_identical_in_a_fresh_process(hash_seed: str) -> None:
    ids = IDS[:300]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps([SPEC, ids]), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    expected = _in_process(ids)
    assert json.loads(proc.stdout) == expected
    sampled = [row[1][3] for row in expected]
    assert any(sampled) and not all(sampled)  # a mix, so equality means something
