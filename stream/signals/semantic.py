"""First-tier semantic signals: per-language lexicons matched against the trace's user messages.

For every user message (see :mod:`schemas.user_messages`) and every signal type, the type's
compiled alternation is searched; the first hit that no ``exclude`` pattern overlaps and, for
negatable types, whose clause holds no negation before it ("I don't want to talk to a human",
"no thanks") becomes one :class:`~stream.signals.base.Signal`. At most one signal per (type,
message): languages are tried in configured order, then the inline ``extra`` phrases. An optional
heuristic reports shouting (mostly upper-case words) as frustration.

Keyword detectors are precise but have very low recall (arXiv 2411.17437): lexicons favour
precision, and richer detection belongs to the LLM judges downstream.

    miner = build_miner(SemanticSignalSpec(type="semantic", name="user-text", languages=["en", "de"]))
    signals = miner.mine(trace)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.model import Trace
from stream.signals.base import SEMANTIC_TYPES, Signal, clip_evidence
from stream.signals.lexicon import Lexicon, TypeRules, load_lexicon, parse_lexicon
from stream.signals.prefilter import ascii_words
from schemas.user_messages import UserMessage, user_messages

SemanticType = Literal["frustration", "correction", "escalation", "abandonment", "gratitude", "win"]

_QUOTES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'"})  # 1:1, so offsets are kept
_CLAUSE_END = re.compile(r"[,.;:!?…]")
_NEGATION_WINDOW_CHARS = 60
_NEGATION_WINDOW_WORDS = 4
_HIT_CACHE_SIZE = 4096  # distinct user-message texts whose lexicon hits are remembered
_LETTER_WORD = re.compile(r"[^\W\d_]{2,}")
_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))


class SemanticSignalSpec(BaseModel):
    """Config of one semantic rule (an entry of the signal rules in the worker config)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["semantic"] = "semantic"
    name: str = Field(min_length=1)
    # built-in lexicon names ("en", "de") or paths to lexicon YAML files, tried in this order
    languages: list[str] = Field(default_factory=lambda: ["en"])
    # inline phrases per type (same syntax as lexicon phrases; "re:" for a regex)
    extra: dict[SemanticType, list[str]] = Field(default_factory=dict)
    disabled_types: list[SemanticType] = Field(default_factory=list)
    shouting: bool = True  # mostly upper-case messages count as frustration
    max_chars: int = Field(default=4000, gt=0)  # only the head of long messages (pasted files) is read


class SemanticMiner:
    """A :class:`~stream.signals.base.SignalMiner` over compiled lexicons; build with :func:`build_miner`."""

    def __init__(self, name: str, lexicons: Iterable[Lexicon], *, shouting: bool = True, max_chars: int = 4000) -> None:
        self.name = name
        self.lexicons = tuple(lexicons)
        self.shouting = shouting
        self.max_chars = max_chars
        self._hits: dict[str, tuple[tuple[str, int, int, str | None], ...]] = {}

    def mine(self, trace: Trace) -> list[Signal]:
        return self.mine_messages(m for m in user_messages(trace) if not m.prior_turn)  # this trace's turn

    def mine_messages(self, messages: Iterable[UserMessage]) -> list[Signal]:
        signals: list[Signal] = []
        for msg in messages:
            signals.extend(self._mine_one(msg))
        return signals

    def _mine_one(self, msg: UserMessage) -> list[Signal]:
        # Keyed by the head before quote folding: the hits depend only on it, and a hit (the usual
        # case: history repeats in every later trace of a conversation) then skips the translate,
        # a dict lookup per character.
        head = msg.text[: self.max_chars]
        hits = self._hits.get(head)
        if hits is None:
            hits = self._find(head.translate(_QUOTES))
            if len(self._hits) >= _HIT_CACHE_SIZE:  # FIFO: a conversation's history repeats in
                self._hits.pop(next(iter(self._hits)))  # every later trace of that conversation
            self._hits[head] = hits
        return [self._signal(type_, msg, start, end, language) for type_, start, end, language in hits]

    def _find(self, text: str) -> tuple[tuple[str, int, int, str | None], ...]:
        found: dict[str, tuple[str, int, int, str | None]] = {}
        lower = text.lower() if text.isascii() else None  # same offsets: ASCII lower-casing is 1:1
        words = ascii_words(lower) if lower is not None else None  # for the prechecks
        for lex in self.lexicons:
            for rules in lex.types:
                if rules.type in found:
                    continue
                hit = first_hit(text, rules, lex.negation, lower, words)
                if hit is not None:
                    found[rules.type] = (rules.type, hit.start(), hit.end(), lex.language)
        if self.shouting and "frustration" not in found and is_shouting(text):
            found["frustration"] = ("frustration", 0, 0, None)
        return tuple(found.values())

    def _signal(self, type_: str, msg: UserMessage, start: int, end: int, language: str | None) -> Signal:
        return Signal(
            type=type_,
            polarity=SEMANTIC_TYPES[type_],
            source="semantic",
            rule=self.name,
            evidence=clip_evidence(msg.text, start, end),
            message_index=msg.index,
            span_id=msg.span_id,
            language=language,
            ts_ns=msg.ts_ns,
        )


def first_hit(
    text: str,
    rules: TypeRules,
    negation: re.Pattern[str] | None,
    lower: str | None = None,
    words: set[bytes] | None = None,
) -> re.Match[str] | None:
    """The first match of ``rules`` in ``text`` not cancelled by an exclude pattern or a negation.
    ``lower``: ``text.lower()`` if ``text`` is ASCII (then the faster case-sensitive variant runs);
    ``words``: ``ascii_words(lower)``, to skip a search that cannot match (``rules.precheck``)."""
    if lower is not None and rules.ascii_lower is not None:
        if words is not None and rules.precheck is not None and not rules.precheck.may_match(lower, words):
            return None
        matches = rules.ascii_lower.finditer(lower)
    else:
        matches = rules.pattern.finditer(text)
    for m in matches:
        if rules.exclude is not None and _overlapped(text, m, rules.exclude):
            continue
        if rules.negatable and negation is not None and is_negated(text, m.start(), negation):
            continue
        return m
    return None


def _overlapped(text: str, m: re.Match[str], exclude: re.Pattern[str]) -> bool:
    return any(x.start() < m.end() and m.start() < x.end() for x in exclude.finditer(text))


def is_negated(text: str, start: int, negation: re.Pattern[str]) -> bool:
    """True if the last few words before ``start``, within its clause, hold a negation."""
    before = text[max(0, start - _NEGATION_WINDOW_CHARS) : start]
    clause = _CLAUSE_END.split(before)[-1]
    words = clause.split()[-_NEGATION_WINDOW_WORDS:]
    return bool(words) and negation.search(" ".join(words)) is not None


def is_shouting(text: str) -> bool:
    """At least 3 upper-case words, 12 upper-case letters, and 70 % of the words upper-case
    (so a few acronyms such as "AWS IAM" do not count)."""
    if text.isascii() and len(text) - len(text.encode().translate(None, _ASCII_UPPER)) < 12:
        return False  # fewer than 12 upper-case letters in all (the usual case): no word split
    words = _LETTER_WORD.findall(text)
    caps = [w for w in words if w.isupper()]
    return len(caps) >= 3 and sum(map(len, caps)) >= 12 and len(caps) >= 0.7 * len(words)


def build_miner(spec: SemanticSignalSpec) -> SemanticMiner:
    """Load and compile everything ``spec`` needs; ValueError (naming the rule and the phrase) on a
    bad lexicon or phrase."""
    disabled = frozenset(spec.disabled_types)
    lexicons = [load_lexicon(ref, spec.name).without(disabled) for ref in spec.languages]
    extra = {t: phrases for t, phrases in spec.extra.items() if phrases and t not in disabled}
    if extra:
        negation = lexicons[0].negation if lexicons else None
        inline = parse_lexicon({"types": {t: {"phrases": p} for t, p in extra.items()}}, "extra", spec.name)
        lexicons.append(Lexicon(None, inline.types, negation))
    return SemanticMiner(spec.name, lexicons, shouting=spec.shouting and "frustration" not in disabled,
                         max_chars=spec.max_chars)  # fmt: skip
