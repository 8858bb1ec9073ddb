"""What a signal miner produces, and the interface every miner implements.

A :class:`Signal` is one piece of evidence about how the user experienced a trace: a frustrated or
grateful sentence (``source="semantic"``, see :mod:`stream.signals.semantic`) or an explicit user
action such as a regenerate or a thumbs-down (``source="action"``, see :mod:`stream.signals.actions`).
Miners are pure: a :class:`~schemas.model.Trace` in, a list of signals out, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from schemas.model import Trace

Polarity = Literal["negative", "positive", "neutral"]  # neutral: an action neither way (retry, report)
Source = Literal["semantic", "action"]

# Signal types found in user text, with their polarity. Action miners add their own types
# (regenerate, thumbs_down, ...); ``Signal.type`` is a plain string so they need no change here.
SEMANTIC_TYPES: dict[str, Polarity] = {
    "frustration": "negative",
    "correction": "negative",
    "escalation": "negative",
    "abandonment": "negative",
    "gratitude": "positive",
    "win": "positive",
}

EVIDENCE_MAX_CHARS = 300


@dataclass(frozen=True, slots=True)
class Signal:
    type: str  # frustration | correction | escalation | abandonment | gratitude | win | action types
    polarity: Polarity
    source: Source
    rule: str  # name of the configured rule (miner) that produced it
    evidence: str  # the text that triggered it, at most EVIDENCE_MAX_CHARS characters
    message_index: int | None = None  # index in the trace's user-message sequence
    span_id: str | None = None  # span where the evidence first appeared
    language: str | None = None  # lexicon language, for semantic signals
    ts_ns: int | None = None  # when it happened (start of that span), if known
    key: str | None = None  # what tells it apart in its trace, when not its message: the action event id


@runtime_checkable
class SignalMiner(Protocol):
    """Finds signals in one completed trace. Must be cheap: it runs on every trace."""

    name: str

    def mine(self, trace: Trace) -> list[Signal]: ...


def clip_evidence(text: str, start: int = 0, end: int | None = None, limit: int = EVIDENCE_MAX_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else a window of it around ``text[start:end]``
    (the match), marked with ``…`` where cut."""
    if len(text) <= limit:
        return text.strip()
    end = start if end is None else end
    budget = limit - 2  # room for the two ellipses
    if end - start >= budget:
        return text[start : start + budget - 1] + "…"
    lo = max(0, start - (budget - (end - start)) // 2)
    hi = min(len(text), lo + budget)
    lo = max(0, hi - budget)
    return ("…" if lo > 0 else "") + text[lo:hi] + ("…" if hi < len(text) else "")
