"""Words a regex cannot match without: a cheap precheck before the lexicon regexes run.

A lexicon type's pattern is one large alternation that Python's matcher tries at every position
of the text (5-20 µs per type on a 200-character message), and most user messages match no type
at all. :func:`precheck` reads the pattern's parse tree and returns groups of words and a few
substrings such that every match contains all words of one group as whole words of the text, or
one of the substrings. When the text's words (``\\w+`` runs) fail that — a set operation first,
then subset tests — the search cannot succeed and is skipped. The outcome is the same as running
the regex: only searches that would find nothing are skipped.

How the groups are found. Each item of a sequence is abstracted as the finite set of texts it can
consume, where ``\\0`` stands for "a word boundary here" — zero-width ``\\b``, ``^``, ``$``, or a
run of non-word characters such as ``\\s+``; items with too many or unbounded texts (``\\w+``,
``.``) have none. Runs of consecutive finite items are expanded into every concatenation
(``\\bi (?:already|just) told`` → ``\\0i already told``, ``\\0i just told``). In such a string the
words with a boundary or a non-word character on *both* sides are whole words of any text the
string stands for: they form its group (``{i, already}``: ``told`` may continue, ``toldx``). A
string without such a word gives its longest run of word characters, to be found as a substring
(``ugh+`` needs ``ug``). An alternation needs one token from each branch. Of the candidate sets of
a sequence, the one whose weakest token is strongest is kept. Anything not understood yields
nothing, and a pattern without a usable set gets no precheck (``None``).

Only for case-sensitive patterns run on lower-cased ASCII text (the lexicon's ``ascii_lower``
variants), where ``\\w`` and ``\\b`` have their ASCII meaning. The parse tree comes from
``re._parser`` (CPython's own regex parser, private but stable within a Python version); should
it be unavailable or fail, the precheck is simply not used.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

try:  # CPython 3.11+
    from re import _constants as sre_c
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - other interpreters: no precheck
    sre_c = sre_parse = None  # type: ignore[assignment]

MAX_EXPANSION = 256  # texts one expanded run may hold (more: the run is cut there)
MAX_GROUPS = 200  # a precheck with more alternatives than this is not worth it
MAX_SUBSTRINGS = 8  # each costs a scan of the text
SUBSTRING = "\1"  # marks a required string that is a substring (words come as frozensets)
BOUNDARY = "\0"  # in an abstract text: a word boundary (a literal NUL is a non-word character too)
# bytes.translate table: every byte that is not an ASCII word character becomes a space
_SPACE_OUT = bytes(c if re.match(rb"\w", bytes([c])) else 0x20 for c in range(256))
_NON_WORD = re.compile(r"\W")
Token = frozenset[str] | str  # a group of words all required, or SUBSTRING + a substring
_NON_WORD_RUN = re.compile(r"\W+")

if sre_c is not None:
    _EDGES = frozenset({sre_c.AT_BOUNDARY, sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_LINE,
                        sre_c.AT_BEGINNING_STRING, sre_c.AT_END, sre_c.AT_END_LINE, sre_c.AT_END_STRING})  # fmt: skip
    _REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT)
    # character classes whose every member is a non-word character
    _NON_WORD_CATEGORIES = frozenset({sre_c.CATEGORY_SPACE, sre_c.CATEGORY_NOT_WORD,
                                      sre_c.CATEGORY_UNI_SPACE, sre_c.CATEGORY_UNI_NOT_WORD})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Precheck:
    """Every match contains all words of one of ``groups`` as whole words, or one of
    ``substrings``. ``words`` (the longest word of each group) is the cheap first test."""

    words: frozenset[bytes]  # ASCII only: a word with other characters is never in ASCII text
    groups: tuple[frozenset[bytes], ...]
    substrings: tuple[str, ...]
    # the groups by their key word (the one in ``words``): a group can only be all in the text if
    # its key word is, so only those groups are tested (a type has up to 200 groups, and testing
    # each was most of the precheck's time)
    by_word: dict[bytes, tuple[frozenset[bytes], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_word: dict[bytes, list[frozenset[bytes]]] = {}
        for g in self.groups:
            by_word.setdefault(_key_word(g), []).append(g)
        object.__setattr__(self, "by_word", {w: tuple(gs) for w, gs in by_word.items()})

    def may_match(self, text: str, text_words: set[bytes]) -> bool:
        """False if the pattern cannot match the ASCII ``text`` (``text_words``: its ascii_words)."""
        by_word = self.by_word
        for w in self.words.intersection(text_words):
            for g in by_word.get(w, ()):
                if g <= text_words:
                    return True
        return any(s in text for s in self.substrings)


def _key_word(group: frozenset[bytes]) -> bytes:
    """The word of ``group`` that :attr:`Precheck.words` holds: the longest (then the greatest)."""
    return max(group, key=lambda w: (len(w), w))


def ascii_words(text: str) -> set[bytes]:
    """The words of an ASCII ``text``, as bytes: ``re.findall(r"\\w+", text)``, 2.5x faster (bytes
    translate and split are the cheapest tokenizer Python has)."""
    return set(text.encode("ascii").translate(_SPACE_OUT).split())


def precheck(pattern: re.Pattern[str]) -> Precheck | None:
    """The precheck of a case-sensitive ``pattern`` for ASCII text, or ``None`` when none is found
    (then always run the pattern)."""
    if sre_parse is None or pattern.flags & re.IGNORECASE:
        return None
    try:
        found = _factors(list(sre_parse.parse(pattern.pattern, pattern.flags).data), "", "")
    except Exception:  # noqa: BLE001 - an unexpected tree shape: no precheck, never a wrong one
        return None
    if not found:
        return None
    found_in = {t[1:] for t in found if isinstance(t, str)}
    # a text containing "foobar" contains "foo": keep only substrings with no other one inside
    substrings = tuple(sorted(s for s in found_in if not any(t != s and t in s for t in found_in)))
    # a group with a non-ASCII word is never all in ASCII text; one holding another is redundant
    ascii_groups = {g for g in found if isinstance(g, frozenset) and all(map(str.isascii, g))}
    minimal = [g for g in ascii_groups if not any(h < g for h in ascii_groups)]
    if len(minimal) > MAX_GROUPS or len(substrings) > MAX_SUBSTRINGS:
        return None
    groups = [frozenset(w.encode() for w in g) for g in minimal]
    words = frozenset(map(_key_word, groups))
    return Precheck(words, tuple(sorted(groups, key=sorted)), substrings)


def _factors(items: list[tuple[Any, Any]], left: str, right: str) -> set[Token] | None:
    """Tokens one of which every match of the sequence ``items`` satisfies (holds all words of a
    word group as whole words, or a :data:`SUBSTRING`), or None. ``left`` / ``right`` are
    :data:`BOUNDARY` when the context guarantees a boundary there."""
    texts = [_texts(item) for item in items]
    runs: list[set[str]] = []  # abstract texts of expanded runs
    inners: list[set[Token]] = []  # tokens of items that are not runs
    run: set[str] = {left}
    for i, item in enumerate(items):
        t = texts[i]
        if t is not None and len(joined := _concat(run, t)) <= MAX_EXPANSION:
            run = joined
            continue
        if t is not None:  # finite but too many combinations: cut the run, start one with it
            runs.append(_concat(run, {BOUNDARY}) if _starts_non_word(t) else run)
            run = _concat({BOUNDARY}, t) if _ends_non_word(run) else t
            continue
        runs.append(run)
        inner_left = BOUNDARY if _ends_non_word(run) else ""
        following = texts[i + 1] if i + 1 < len(items) else ({right} if right else None)
        inner_right = BOUNDARY if following is not None and _starts_non_word(following) else ""
        if (inner := _item_factors(item, inner_left, inner_right)) is not None:
            inners.append(inner)
        run = {""}
    runs.append(_concat(run, {right}))
    usable = [w for w in map(_words_of, runs) if w] + inners
    if not usable:
        return None
    return max(usable, key=_score)


def _score(found: set[Token]) -> tuple[float, int]:
    """Longest shortest token first (a word group counts as its longest word; a substring as half
    a word as long: it costs a scan of the text and matches inside words too), then the smallest
    set."""
    return min(max(map(len, t)) if isinstance(t, frozenset) else (len(t) - 1) / 2 for t in found), -len(found)


def _collapse(text: str) -> str:
    """Every run of non-word characters as one :data:`BOUNDARY`: for telling whole words apart all
    separators are alike, and this keeps the expanded sets small."""
    return _NON_WORD_RUN.sub(BOUNDARY, text)


def _concat(heads: set[str], tails: set[str]) -> set[str]:
    return {_collapse(a + b) for a, b in itertools.product(heads, tails)}


def _words_of(texts: set[str]) -> set[Token] | None:
    """One token per abstract text: its whole words (separators on both sides), else its longest
    run of word characters as a :data:`SUBSTRING`; None if some text has neither."""
    found: set[Token] = set()
    for text in texts:
        pieces = _NON_WORD.split(text)
        words = frozenset(p for p in pieces[1:-1] if p)  # first / last may continue outside the text
        if words:
            found.add(words)
            continue
        piece = max(pieces, key=len)
        if not piece:
            return None
        found.add(SUBSTRING + piece)
    return found


def _ends_non_word(texts: set[str]) -> bool:
    return all(t and _NON_WORD.match(t[-1]) for t in texts)


def _starts_non_word(texts: set[str]) -> bool:
    return all(t and _NON_WORD.match(t[0]) for t in texts)


def _item_factors(item: tuple[Any, Any], left: str, right: str) -> set[Token] | None:
    """Tokens of one item whose texts are not a small finite set."""
    op, av = item
    if op is sre_c.SUBPATTERN:
        _, add_flags, _, sub = av
        return None if add_flags & re.IGNORECASE else _factors(list(sub.data), left, right)
    if op is sre_c.ATOMIC_GROUP:
        return _factors(list(av.data), left, right)
    if op is sre_c.BRANCH:
        out: set[Token] = set()
        for alternative in av[1]:
            found = _factors(list(alternative.data), left, right)
            if found is None:
                return None  # a match through this branch needs none of the others' words
            out |= found
        return out
    if op in _REPEATS:
        low, _, sub = av
        return _factors(list(sub.data), "", "") if low >= 1 else None
    return None


def _texts(item: tuple[Any, Any]) -> set[str] | None:
    """Every abstract text ``item`` can consume, if that is a small finite set; else None."""
    op, av = item
    if op is sre_c.LITERAL:
        return {_collapse(chr(av))}
    if op is sre_c.AT:
        return {BOUNDARY} if av in _EDGES else {""}
    if op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
        return {""}  # zero-width, and says nothing we use
    if op is sre_c.IN:
        if _non_word_class(av):
            return {BOUNDARY}
        if all(o is sre_c.LITERAL for o, _ in av):  # [’'] (a NEGATE or a range is no literal)
            return {_collapse(chr(c)) for _, c in av}
        return None
    if op is sre_c.SUBPATTERN:
        _, add_flags, _, sub = av
        return None if add_flags & re.IGNORECASE else _seq_texts(list(sub.data))
    if op is sre_c.BRANCH:
        out: set[str] = set()
        for alternative in av[1]:
            texts = _seq_texts(list(alternative.data))
            if texts is None:
                return None
            out |= texts
        return out if len(out) <= MAX_EXPANSION else None
    if op in _REPEATS:
        low, high, sub = av
        texts = _seq_texts(list(sub.data))
        if texts is None:
            return None
        if texts == {BOUNDARY}:  # \s+, [.!?]* ...: a run of non-word characters, or nothing
            return {BOUNDARY} if low >= 1 else {"", BOUNDARY}
        if high > 2:
            return None
        out = set()
        for n in range(low, high + 1):
            out |= {_collapse("".join(p)) for p in itertools.product(texts, repeat=n)}
        return out if len(out) <= MAX_EXPANSION else None
    return None


def _non_word_class(members: list[tuple[Any, Any]]) -> bool:
    """True if a character class (not negated) holds only non-word characters."""
    for op, av in members:
        if op is sre_c.LITERAL:
            if not _NON_WORD.match(chr(av)):
                return False
        elif op is not sre_c.CATEGORY or av not in _NON_WORD_CATEGORIES:
            return False
    return bool(members)


def _seq_texts(items: list[tuple[Any, Any]]) -> set[str] | None:
    out: set[str] = {""}
    for item in items:
        texts = _texts(item)
        if texts is None or len(out := _concat(out, texts)) > MAX_EXPANSION:
            return None
    return out
