"""The lexicon precheck: never skips a search that would match (checked on tricky patterns and on
strings generated from the built-in lexicons' own parse trees), and does skip most messages."""

from __future__ import annotations

import random
import re
from re import _constants as C
from re import _parser as P

import pytest

from stream.signals.lexicon import builtin_lexicons, load_lexicon
from stream.signals.prefilter import ascii_words, precheck

TRICKY = [
    r"\bthis\s+is\s+useless\b",
    r"\b(?:ugh+|argh+|wtf)\b",
    r"(?:^|[.!?]\s*)(?:just |please )?stop(?: it| that)?\s*(?:[!.]|$)",
    r"\bthat'?s not it\b",
    r"\bi meant\b(?! to\b| it\b)",
    r"^\W*not what i (?:asked|wanted)\b",
    r"\bno,? i (?:said|meant)\b",
    r"\b(?:a|an) (?:real|actual) (?:person|human)\b",
    r"\bwork(?:s|ed)?\b",
    r"foo\w+bar",
    r"x[a-c]y",
    r"\bthanks?\b",
    r"(?:ab|cd)+ef",
    r"(?i:case) sensitive",
    r"\d{3}-\d{4}",
    r"(?:)word",
    r"a|\bb\b",
]
_CAT = {C.CATEGORY_SPACE: " \n", C.CATEGORY_DIGIT: "07", C.CATEGORY_WORD: "az_9", C.CATEGORY_NOT_WORD: " .,'-"}


def _sample(items: list, rng: random.Random) -> str:
    """A random string built along the pattern's parse tree (often, not always, a match)."""
    out = []
    for op, av in items:
        if op is C.LITERAL:
            out.append(chr(av))
        elif op is C.IN:
            opts = [chr(a) if o is C.LITERAL else rng.choice(_CAT.get(a, "a")) for o, a in av if o is not C.NEGATE]
            out.append(rng.choice(opts or ["q"]))
        elif op is C.BRANCH:
            out.append(_sample(list(rng.choice(av[1]).data), rng))
        elif op is C.SUBPATTERN:
            out.append(_sample(list(av[3].data), rng))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            out.extend(_sample(list(sub.data), rng) for _ in range(rng.randint(lo, min(hi, lo + 3))))
        elif op is C.ANY:
            out.append(rng.choice("a ."))
    return "".join(out)


def _texts(pattern: re.Pattern[str], rng: random.Random, n: int) -> list[str]:
    tree = list(P.parse(pattern.pattern, pattern.flags).data)
    seps = [" ", ", ", ". ", "!", "'", "\n", "-", "", "_", "9", "x"]
    return [
        rng.choice(["", "ok", "well", "so"]) + rng.choice(seps) + _sample(tree, rng) + rng.choice(seps)
        + rng.choice(["", "now", "thanks"])
        for _ in range(n)
    ]  # fmt: skip


def _assert_sound(pattern: re.Pattern[str], texts: list[str]) -> int:
    check = precheck(pattern)
    matched = 0
    for text in texts:
        lower = text.lower()
        if not lower.isascii() or not pattern.search(lower):
            continue
        matched += 1
        assert check is None or check.may_match(lower, ascii_words(lower)), (pattern.pattern, lower)
    return matched


@pytest.mark.parametrize("source", TRICKY)
def test_precheck_never_skips_a_match(source: str) -> None:
    pattern = re.compile(source)
    assert _assert_sound(pattern, _texts(pattern, random.Random(source), 3000)) > 0


@pytest.mark.parametrize("lang", builtin_lexicons())
def test_builtin_lexicons_prechecks_are_sound(lang: str) -> None:
    rng = random.Random(lang)
    for rules in load_lexicon(lang, "t").types:
        if rules.ascii_lower is not None:
            assert _assert_sound(rules.ascii_lower, _texts(rules.ascii_lower, rng, 3000)) > 0, rules.type


def test_precheck_words_and_substrings() -> None:
    useless = precheck(re.compile(r"\bthis\s+is\s+useless\b"))
    assert useless is not None and useless.words == {b"useless"} and not useless.substrings
    ugh = precheck(re.compile(r"\b(?:ugh+|wtf)\b"))
    assert ugh is not None and ugh.words == {b"wtf"} and ugh.substrings == ("ug",)
    assert not useless.may_match("this is fine", ascii_words("this is fine"))
    assert ugh.may_match("ughhh", ascii_words("ughhh"))


@pytest.mark.parametrize("source", [r"\w+", r"a|.", r"(?:)", r"(?i)case"])
def test_no_precheck_when_nothing_is_required(source: str) -> None:
    assert precheck(re.compile(source)) is None


def test_substrings_inside_others_are_dropped() -> None:
    check = precheck(re.compile(r"\bfoo(?:bar)?"))
    assert check is not None and check.substrings == ("foo",) and not check.words


def test_ascii_words_is_findall() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(chr(rng.randrange(128)) for _ in range(rng.randint(0, 30)))
        assert ascii_words(text) == {w.encode() for w in re.findall(r"\w+", text)}


def test_most_messages_skip_every_search() -> None:
    rules = [r for r in load_lexicon("en", "t").types if r.precheck is not None]
    text = "could you check the status of my recent order and the tracking number"
    skipped = [r.type for r in rules if not r.precheck.may_match(text, ascii_words(text))]
    assert {"frustration", "abandonment", "gratitude"} <= set(skipped)


@pytest.mark.parametrize("lang", builtin_lexicons())
def test_may_match_tests_only_groups_of_present_words_with_the_same_outcome(lang: str) -> None:
    rng = random.Random(lang)
    for rules in load_lexicon(lang, "t").types:
        check = rules.precheck
        if check is None or not check.groups:
            continue
        vocab = sorted({w for g in check.groups for w in g})
        for _ in range(500):
            words = set(rng.sample(vocab, min(len(vocab), rng.randint(0, 4))))
            group = sorted(rng.choice(check.groups))
            words |= set(group if rng.random() < 0.5 else group[:-1])
            every_group = not check.words.isdisjoint(words) and any(g <= words for g in check.groups)
            assert check.may_match("", words) == (every_group or any(s in "" for s in check.substrings))
