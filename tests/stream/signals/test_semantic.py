"""The lexicon miner: what fires, what must not, and where a signal points to in the trace."""

from __future__ import annotations

import pytest

from stream.signals.base import SignalMiner
from stream.signals.semantic import SemanticMiner, SemanticSignalSpec, build_miner
from schemas.user_messages import UserMessage

EN = build_miner(SemanticSignalSpec(type="semantic", name="user-text"))
DE = build_miner(SemanticSignalSpec(type="semantic", name="user-text-de", languages=["de"]))


def types(miner: SemanticMiner, text: str) -> set[str]:
    return {s.type for s in miner.mine_messages([UserMessage(0, text, "s", 0)])}


EN_POSITIVE = [
    ("frustration", "This is useless."),
    ("frustration", "You're not helping."),
    ("frustration", "youre not helping at all"),
    ("frustration", "That’s wrong, I never received anything."),
    ("frustration", "Stop!"),
    ("frustration", "Please stop repeating yourself."),
    ("frustration", "I already told you my order number"),
    ("frustration", "Thanks for nothing."),
    ("frustration", "Ugh, this is ridiculous"),
    ("frustration", "WHY DOES THIS NEVER WORK FOR ME"),
    ("correction", "No, I said Tuesday."),
    ("correction", "That's not what I asked"),
    ("correction", "I meant the blue one"),
    ("correction", "It's still not working"),
    ("correction", "Wrong again."),
    ("correction", "You misunderstood me"),
    ("escalation", "Let me talk to a human."),
    ("escalation", "Can I speak to an agent?"),
    ("escalation", "I want to speak with a representative"),
    ("escalation", "please transfer me to a manager"),
    ("escalation", "Is there a real person I can reach?"),
    ("abandonment", "Forget it."),
    ("abandonment", "never mind"),
    ("abandonment", "I'll do it myself"),
    ("abandonment", "ok I give up"),
    ("gratitude", "Thank you!"),
    ("gratitude", "thanks so much"),
    ("gratitude", "I really appreciate your help"),
    ("gratitude", "I can't thank you enough"),
    ("win", "Thanks, that worked!"),
    ("win", "Perfect!"),
    ("win", "great, exactly"),
    ("win", "That's exactly what I needed"),
    ("win", "It's working now"),
]


@pytest.mark.parametrize("expected,text", EN_POSITIVE, ids=[f"{t}:{s}" for t, s in EN_POSITIVE])
def test_english_phrases_fire(expected: str, text: str) -> None:
    assert expected in types(EN, text)


DE_POSITIVE = [
    ("frustration", "Das ist nutzlos."),
    ("frustration", "Du hilfst mir nicht."),
    ("frustration", "Das ist falsch!"),
    ("correction", "Nein, ich meinte Dienstag."),
    ("correction", "Das ist nicht, was ich gefragt habe."),
    ("correction", "Immer noch falsch."),
    ("escalation", "Ich möchte mit einem Menschen sprechen."),
    ("escalation", "Gibt es eine echte Person?"),
    ("abandonment", "Vergiss es."),
    ("abandonment", "Ich mache es selbst."),
    ("abandonment", "Ich gebe auf"),
    ("gratitude", "Vielen Dank!"),
    ("gratitude", "Danke schön"),
    ("win", "Perfekt!"),
    ("win", "Das hat funktioniert."),
    ("win", "Genau das brauchte ich"),
]


@pytest.mark.parametrize("expected,text", DE_POSITIVE, ids=[f"{t}:{s}" for t, s in DE_POSITIVE])
def test_german_phrases_fire(expected: str, text: str) -> None:
    assert expected in types(DE, text)


# (text, exactly the types expected) — near misses a keyword detector typically gets wrong
NEAR_MISSES = [
    ("No problem, take your time.", set()),
    ("no worries", set()),
    ("Thanks for nothing.", {"frustration"}),
    ("Thank you for nothing!", {"frustration"}),
    ("No thanks.", set()),
    ("No, thank you, I'm fine.", set()),
    ("Thanks in advance!", set()),
    ("Thank god it's Friday, can you book a table?", set()),
    ("Thanks, but that's not what I asked.", {"correction"}),
    # negated request: not an escalation (and no frustration phrase either; the judge decides)
    ("I don't want to talk to a human, just fix it", set()),
    ("Don't forget it at the front desk", set()),
    ("I won't give up on this project", set()),
    ("It's not perfect but fine", set()),
    ("Oh great, now it's broken.", set()),
    ("Oh, great.", set()),
    ("It worked yesterday but not today", set()),
    ("Thanks, that worked, but now the tests fail", {"gratitude"}),
    ("Explain how it works.", set()),
    ("Where is the nearest bus stop?", set()),
    ("Stop the dev server and restart it.", set()),
    ("Find me the perfect gift for my mother", set()),
    ("What's wrong with my code?", set()),
    ("I meant to ask about refunds as well.", set()),
    ("My printer doesn't work, can you help?", set()),
    ("Never mind the color, book the cheapest one.", set()),
    ("Can AWS IAM roles use MFA?", set()),
    ("I want to book a flight to Rome", set()),
    ("Can an agent process refunds automatically?", set()),
]


@pytest.mark.parametrize("text,expected", NEAR_MISSES, ids=[t for t, _ in NEAR_MISSES])
def test_near_misses(text: str, expected: set[str]) -> None:
    assert types(EN, text) == expected


def test_german_near_misses() -> None:
    assert types(DE, "Danke für nichts.") == {"frustration"}
    assert types(DE, "Nein danke.") == types(DE, "Nein, danke.") == set()
    assert types(DE, "Es funktioniert nicht.") == set()
    assert types(DE, "Ich will nicht mit einem Menschen sprechen") == set()


def test_one_signal_per_type_and_message_with_fields() -> None:
    msg = UserMessage(3, "This is useless. You're not helping. That's wrong!", "00000000000000aa", 42)
    (sig,) = EN.mine_messages([msg])
    assert (sig.type, sig.polarity, sig.source, sig.rule) == ("frustration", "negative", "semantic", "user-text")
    assert (sig.message_index, sig.span_id, sig.ts_ns, sig.language) == (3, "00000000000000aa", 42, "en")
    assert sig.evidence == msg.text


def test_several_types_in_one_message_and_polarity() -> None:
    sigs = EN.mine_messages([UserMessage(0, "Thanks, that worked! Never mind the rest.", "s", 0)])
    assert {(s.type, s.polarity) for s in sigs} == {("gratitude", "positive"), ("win", "positive")}


def test_long_message_evidence_is_a_window_around_the_match() -> None:
    text = "x " * 400 + "this is useless" + " y" * 400
    (sig,) = EN.mine_messages([UserMessage(0, text, "s", 0)])
    assert len(sig.evidence) <= 300 and "this is useless" in sig.evidence
    assert sig.evidence.startswith("…") and sig.evidence.endswith("…")


def test_only_the_head_of_a_huge_message_is_read() -> None:
    pasted = "log line\n" * 1000 + "this is useless"
    assert types(EN, pasted) == set()
    assert types(build_miner(SemanticSignalSpec(name="r", max_chars=20_000)), pasted) == {"frustration"}


def test_miner_satisfies_the_protocol() -> None:
    assert isinstance(EN, SignalMiner) and EN.name == "user-text"


def test_languages_are_tried_in_order_first_match_wins() -> None:
    both = build_miner(SemanticSignalSpec(name="r", languages=["de", "en"]))
    sigs = both.mine_messages([UserMessage(0, "Danke! Thank you!", "s", 0), UserMessage(1, "Thank you!", "s", 0)])
    assert [(s.message_index, s.type, s.language) for s in sigs] == [(0, "gratitude", "de"), (1, "gratitude", "en")]


def test_ascii_fast_path_finds_what_the_case_insensitive_pattern_finds() -> None:
    miner = build_miner(SemanticSignalSpec(name="m", languages=["en", "de"]))
    texts = ["THAT'S WRONG. Let me talk to a HUMAN", "Thanks a lot!", "Das ist falsch", "ugh, it doesn't even work",
             "I don't want to talk to a human", "You NAILED it", "Ça ne marche pas, that's wrong"]  # fmt: skip
    slow = SemanticMiner("slow", [replace_lower(lex) for lex in miner.lexicons], shouting=miner.shouting)
    for text in texts:
        assert miner._find(text) == slow._find(text), text
    assert any(miner._find(t) for t in texts)


def replace_lower(lex):  # the lexicon without its case-sensitive variants
    import dataclasses

    return dataclasses.replace(lex, types=tuple(dataclasses.replace(t, ascii_lower=None) for t in lex.types))
