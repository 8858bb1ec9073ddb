"""The SIMULATED judge's grading rules (see :mod:`stream.demo.sim_provider` for what it is and is
not): recognize the rubric from the judge prompt, find the demo fleet's failure markers in the
``<untrusted-NONCE>`` blocks, and answer deterministically (same input, same answer)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

UNCERTAIN_RATE = 0.15

#: which failure markers make each built-in rubric fail; an unknown rubric fails on any marker
ALL_MARKERS = frozenset({"tool_error", "tool_loop", "no_answer", "cut_off", "gave_up", "frustration"})
RUBRIC_MARKERS: dict[str, frozenset[str]] = {
    "task_completion": ALL_MARKERS,
    "tool_use_correctness": frozenset({"tool_error", "tool_loop"}),
    "groundedness": frozenset({"tool_error", "no_answer"}),
    "frustration_resolution": frozenset({"frustration", "no_answer", "gave_up", "tool_loop"}),
    "refusal_correctness": frozenset({"no_answer"}),
}
_WHY = {
    "tool_error": "a tool call failed",
    "tool_loop": "the same tool call was repeated without progress",
    "no_answer": "the agent gave no final answer",
    "cut_off": "the final answer stops mid-sentence",
    "gave_up": "the final answer says the task could not be done",
    "frustration": "the user's latest message is a complaint or correction",
}
_PASS_WHY = {
    "task_completion": "the final answer addresses the request and every tool call it relies on succeeded",
    "tool_use_correctness": "each tool call succeeded with plausible arguments and was not repeated",
    "groundedness": "the final answer is consistent with the tool results",
    "frustration_resolution": "the user's latest message shows no unresolved frustration",
    "refusal_correctness": "the agent answered a legitimate request",
}

# ---- reading the judge prompt ------------------------------------------------------------------

_BLOCK = re.compile(r"(?m)^([A-Z][A-Z0-9_]*):\n<untrusted-([0-9A-Za-z]+)>\n(.*?)\n</untrusted-\2>", re.DOTALL)
_ANY_TAG = re.compile(r"</?untrusted-[0-9A-Za-z]+>")
_LABELS = re.compile(r'"label":\s*<one of ([^>]*)>')
_TOOL_CALL = re.compile(r"(?m)^#\d+ (.+?) status=(?:ok|ERROR)\b")
_TOOL_ERROR = re.compile(r"(?m)^.*(?:status=ERROR|\[ERROR\]|\bERROR\b).*$")
_GAVE_UP = re.compile(
    r"\b(?:could(?:n'?t| not)|can(?:'|no)?t|unable to|failed to|try again later|still looking)\b", re.IGNORECASE
)
_FRUSTRATION = re.compile(
    r"that'?s (?:wrong|not what i asked)|not what i (?:asked|wanted)|\buseless\b|talk to a (?:human|person)"
    r"|not helping|still the wrong|\bno,? i (?:said|meant)\b|why is this so hard|doesn'?t (?:even )?(?:work|compile)"
    r"|just answer|i already (?:gave|told) you|never received",
    re.IGNORECASE,
)
_ENDS_SENTENCE = tuple(".!?)\"'`]}*:")


@dataclass(frozen=True)
class Judgement:
    label: str
    score: float
    explanation: str
    evidence: list[str]
    rubric: str
    markers: tuple[str, ...]
    uncertain: bool


def text_of(content: Any) -> str:
    """A message's content as text (a string, or OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


_rubric_lines: dict[str, str] | None = None


def _rubric_first_lines() -> dict[str, str]:
    """First instruction line of each built-in rubric's template -> rubric name."""
    global _rubric_lines
    if _rubric_lines is None:
        from judges.rubric import builtin_rubrics

        lines = {}
        for name, rubric in builtin_rubrics().items():
            first = next((ln.strip() for ln in rubric.template.splitlines() if ln.strip()), "")
            if first:
                lines[first] = name
        _rubric_lines = lines
    return _rubric_lines


def recognize_rubric(system: str, user: str = "") -> str:
    """The built-in rubric whose instructions the prompt carries, or ``"unknown"``."""
    for first, name in _rubric_first_lines().items():
        if first in system or first in user:
            return name
    return "unknown"


def _labels(system: str, user: str) -> list[str]:
    m = _LABELS.search(system) or _LABELS.search(user)
    if m:
        found = re.findall(r'"([^"]+)"', m.group(1))
        if found:
            return found
    return ["pass", "fail"]


def _last_user_message(blocks: Mapping[str, str], data: str) -> str:
    if "USER_MESSAGES" in blocks:
        lines = [ln for ln in blocks["USER_MESSAGES"].splitlines() if ln.strip()]
        return lines[-1] if lines else ""
    if "CONVERSATION" in blocks:
        users = re.findall(r"(?m)^\[user\] (.*)$", blocks["CONVERSATION"])
        return users[-1] if users else ""
    return data


def _clip(s: str, n: int = 160) -> str:
    s = s.strip()
    return s if len(s) <= n else s[: n - 1] + "…"


def find_markers(blocks: Mapping[str, str], data: str) -> list[tuple[str, str]]:
    """(marker, evidence quote) for every failure marker in the trace data."""
    found: list[tuple[str, str]] = []
    tool_text = "\n".join(blocks[k] for k in ("TOOL_CALLS", "TOOL_RESULTS") if k in blocks) if blocks else data
    err = _TOOL_ERROR.search(tool_text)
    if err:
        found.append(("tool_error", _clip(err.group(0))))
    calls = Counter(_TOOL_CALL.findall(tool_text))
    if calls:
        call, n = calls.most_common(1)[0]
        if n >= 3:
            found.append(("tool_loop", _clip(f"{call} x{n}")))
    if "FINAL_ANSWER" in blocks:
        final = blocks["FINAL_ANSWER"].strip()
        if final in ("", "(none)"):
            found.append(("no_answer", "final answer: (none)"))
        else:
            if not final.endswith(_ENDS_SENTENCE):
                found.append(("cut_off", _clip("…" + final[-80:])))
            gave_up = _GAVE_UP.search(final)
            if gave_up:
                found.append(("gave_up", _clip(final)))
    last_user = _last_user_message(blocks, data).replace("\u2019", "'")
    frustrated = _FRUSTRATION.search(last_user)
    if frustrated:
        found.append(("frustration", _clip(last_user if len(last_user) <= 160 else frustrated.group(0))))
    return found


def _unit(digest: bytes, offset: int) -> float:
    """A number in [0, 1) from 4 bytes of ``digest``."""
    return int.from_bytes(digest[offset : offset + 4], "big") / 2**32


def judge_request(body: Mapping[str, Any], strong_models: Iterable[str] = (),
                  uncertain_rate: float = UNCERTAIN_RATE) -> Judgement:  # fmt: skip
    """The simulated verdict for one chat-completions request body (pure, deterministic)."""
    messages = body.get("messages") or []
    system = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    user = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") == "user")
    model = str(body.get("model") or "")
    rubric = recognize_rubric(system, user)
    labels = _labels(system, user)
    pass_label, fail_label = labels[0], labels[1] if len(labels) > 1 else labels[0]
    blocks = {name: value for name, _nonce, value in _BLOCK.findall(user)}
    data = "\n\n".join(f"{k}:\n{v}" for k, v in blocks.items()) if blocks else _ANY_TAG.sub("", user)
    relevant = RUBRIC_MARKERS.get(rubric, ALL_MARKERS)
    markers = [(m, ev) for m, ev in find_markers(blocks, data) if m in relevant]

    digest = hashlib.sha256(f"{rubric}\x00{data}".encode()).digest()  # the nonce is not part of it
    strong = "strong" in model.lower() or model in set(strong_models)
    uncertain = not strong and _unit(digest, 0) < uncertain_rate
    if strong:
        confidence = 0.93 + 0.05 * _unit(digest, 4)
    elif uncertain:
        confidence = 0.55 + 0.10 * _unit(digest, 4)
    else:
        confidence = 0.85 + 0.10 * _unit(digest, 4)
    confidence = round(confidence, 3)
    hedge = " Not certain: the evidence is thin." if uncertain else ""
    if markers:
        why = "; ".join(dict.fromkeys(_WHY[m] for m, _ in markers))
        return Judgement(fail_label, round(1.0 - confidence, 3),
                         f"(simulated) {fail_label}: {why}.{hedge}", [ev for _, ev in markers][:5],
                         rubric, tuple(m for m, _ in markers), uncertain)  # fmt: skip
    why = _PASS_WHY.get(rubric, "no failure markers found in the trace data")
    return Judgement(pass_label, confidence, f"(simulated) {pass_label}: {why}.{hedge}", [], rubric, (), uncertain)


def tokens(text: str) -> int:
    return max(1, len(text) // 4)
