"""Traces and an honest provider answer shared by the judge fault scenarios."""

from __future__ import annotations

import json
import random
from typing import Any

from tests.factories import genai_trace
from tests.judges.fake_provider import Reply


def make_traces(rng: random.Random, n: int) -> tuple[list[list[Any]], set[int]]:
    """``n`` suspected-failure traces (all sampled), each marked ``case-<i>-case`` in its messages;
    every third one shows BROKEN to the judge (honest label ``fail``; every trace has an error span,
    so the judging_support rule on ERROR would fail them all)."""
    traces, failing = [], set()
    for i in range(n):
        t = genai_trace(rng, rng.randrange(3, 7))
        bad = i % 3 == 0
        for span in t:
            for attr, word in (("gen_ai.input.messages", "question"), ("gen_ai.output.messages", "answer")):
                if attr in span.attrs:
                    marker = "BROKEN " if bad and word == "answer" else ""
                    span.attrs[attr] = span.attrs[attr].replace(word, f"{marker}{word} case-{i}-case")
        t[-1].error = True
        traces.append(t)
        if bad:
            failing.add(i)
    return traces, failing


def honest(body: Any, usage: tuple[int, int] = (1000, 100)) -> Reply:
    """The provider's honest judgment: ``fail`` iff the trace shows BROKEN; always sure (no escalation)."""
    label = "fail" if "BROKEN" in json.dumps(body) else "pass"
    text = json.dumps({"label": label, "score": 0.95 if label == "pass" else 0.05,
                       "explanation": f"{label} by rule", "evidence": []})  # fmt: skip
    return Reply(text=text, input_tokens=usage[0], output_tokens=usage[1])
