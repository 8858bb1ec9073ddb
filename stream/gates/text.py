"""Small text helpers shared by gates: evidence clipping, redaction, keyword regexes."""

from __future__ import annotations

import re
from collections.abc import Sequence

EVIDENCE_MAX_CHARS = 300


def clip(text: str | None, limit: int = EVIDENCE_MAX_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters (marked with ``…``)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def clip_around(text: str, start: int, end: int, limit: int = EVIDENCE_MAX_CHARS) -> str:
    """The match ``text[start:end]`` with context around it, at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    if end - start >= limit:
        return text[start : start + limit - 1] + "…"
    pad = (limit - (end - start)) // 2
    lo = max(0, start - pad)
    hi = min(len(text), lo + limit)
    lo = max(0, hi - limit)
    return ("…" if lo else "") + text[lo:hi] + ("…" if hi < len(text) else "")


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}es" if word.endswith(("ch", "sh", "s", "x")) else f"{n} {word}s"


def redact(text: str) -> str:
    """Keep the first and last two characters, mask the rest."""
    if len(text) <= 4:
        return "*" * len(text)
    return text[:2] + "*" * (len(text) - 4) + text[-2:]


def keyword_regex(keywords: list[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def any_match_regex(patterns: Sequence[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One regex that matches somewhere iff one of ``patterns`` does, for a cheap "does anything
    match at all?" precheck before trying the patterns one by one: the text is scanned once, with
    one alternation per position, instead of once per pattern (~2.5x faster on the default refusal
    patterns). ``None`` when combining could change what a pattern means: fewer than two patterns,
    different flags, verbose mode (a ``#`` comment would swallow the closing parenthesis), any
    group (backreferences would be renumbered), or sources that do not compile together (global
    inline flags such as ``(?i)`` must start the whole expression)."""
    if len(patterns) < 2 or len({p.flags for p in patterns}) != 1:
        return None
    flags = patterns[0].flags
    if flags & re.VERBOSE or any(p.groups for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns), flags)
    except re.error:
        return None
