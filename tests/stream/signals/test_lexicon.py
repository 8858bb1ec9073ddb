"""Lexicon configuration: built-in languages, user files, inline phrases, and errors that name the rule."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from stream.signals.lexicon import builtin_lexicons, compile_phrases, lower_case_variant, phrase_regex
from stream.signals.semantic import SemanticMiner, SemanticSignalSpec, build_miner
from schemas.user_messages import UserMessage


def types(miner: SemanticMiner, text: str) -> set[str]:
    return {s.type for s in miner.mine_messages([UserMessage(0, text, "s", 0)])}


def test_builtin_lexicons_ship_with_the_package() -> None:
    assert {"en", "de"} <= set(builtin_lexicons())
    for name in builtin_lexicons():  # every shipped lexicon compiles
        build_miner(SemanticSignalSpec(name="all", languages=[name]))


@pytest.mark.parametrize(
    "phrase,text,hit",
    [
        ("that's wrong", "thats wrong", True),
        ("that's wrong", "That’s   WRONG", True),
        ("forget it", "forget items", False),
        ("stop", "nonstop", False),
        ("re:\\bugh+\\b", "UGHHH", True),
    ],
    ids=["apostrophe-optional", "typographic-apostrophe-case-space", "word-boundary-end", "word-boundary-start", "regex"],
)
def test_plain_phrase_syntax(phrase: str, text: str, hit: bool) -> None:
    miner = build_miner(SemanticSignalSpec(name="r", languages=[], extra={"frustration": [phrase]}, shouting=False))
    assert (types(miner, text) == {"frustration"}) is hit, phrase_regex(phrase)


def test_extra_phrases_add_to_the_languages_and_disabled_types_are_dropped() -> None:
    spec = SemanticSignalSpec(type="semantic", name="acme", extra={"escalation": ["call me back"], "win": ["shipped it"]},
                              disabled_types=["gratitude", "win"])  # fmt: skip
    miner = build_miner(spec)
    assert types(miner, "Please call me back") == {"escalation"}
    assert types(miner, "Thank you, shipped it!") == set()
    (sig,) = miner.mine_messages([UserMessage(0, "call me back", "s", 0)])
    assert sig.language is None and sig.rule == "acme"


def test_inline_phrases_are_negatable_like_the_builtin_ones() -> None:
    miner = build_miner(SemanticSignalSpec(name="r", extra={"escalation": ["call me back"]}))
    assert types(miner, "Don't call me back") == set()


def test_disabling_frustration_also_disables_shouting() -> None:
    assert types(build_miner(SemanticSignalSpec(name="r")), "PLEASE HELP ME RIGHT NOW") == {"frustration"}
    assert types(build_miner(SemanticSignalSpec(name="r", disabled_types=["frustration"])), "PLEASE HELP ME RIGHT NOW") == set()


def test_user_lexicon_file(tmp_path: Path) -> None:
    path = tmp_path / "fr.yaml"
    path.write_text(
        "language: fr\n"
        "negation: 're:\\b(?:ne|pas|jamais)\\b'\n"
        "types:\n"
        "  gratitude:\n"
        "    phrases: [merci, merci beaucoup]\n"
        "    exclude: ['re:\\bmerci pour rien\\b']\n"
        "  frustration:\n"
        "    phrases: [merci pour rien, 're:\\bc.est nul\\b']\n",
        encoding="utf-8",
    )
    miner = build_miner(SemanticSignalSpec(name="fr-rule", languages=["en", str(path)]))
    assert types(miner, "Merci beaucoup !") == {"gratitude"}
    assert types(miner, "Merci pour rien.") == {"frustration"}
    (sig,) = miner.mine_messages([UserMessage(0, "c'est nul", "s", 0)])
    assert sig.language == "fr"


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"extra": {"frustration": ["re:(unclosed"]}}, r"rule 'bad-rule'.*invalid phrase 're:\(unclosed'"),
        ({"languages": ["xx"]}, "rule 'bad-rule': unknown lexicon 'xx'"),
        ({"languages": ["missing/fr.yaml"]}, "rule 'bad-rule': lexicon file 'missing/fr.yaml' cannot be read"),
    ],
    ids=["bad-regex", "unknown-language", "missing-file"],
)
def test_config_errors_name_the_rule_and_the_problem(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_miner(SemanticSignalSpec(name="bad-rule", **spec))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body,message",
    [
        ("types:\n  frustration:\n    phrases: ['re:a[']\n", r"rule 'bad-rule', lexicon .*bad.yaml, frustration: invalid phrase 're:a\['"),
        ("types:\n  frustration:\n    phrases: [ok]\n    exclude: ['re:(?<']\n", "frustration exclude: invalid phrase"),
        ("types:\n  sarcasm:\n    phrases: [sure]\n", "unknown signal type 'sarcasm'"),
        ("types:\n  win:\n    phrases: [fine, 3]\n", "win.phrases: expected a list of non-empty strings"),
        ("types:\n  win:\n    phrases: [yes]\n", "win.phrases: expected a list"),  # YAML reads yes as true
        ("types:\n  win:\n    phrases: [fine]\n    negatable: maybe\n", "'negatable' must be true or false"),
        ("language: xx\n", "expected a mapping with a 'types' mapping"),
        ("types: [\n", "rule 'bad-rule': lexicon .*bad.yaml is not valid YAML"),
    ],
    ids=["bad-regex", "bad-exclude", "unknown-type", "non-string", "yaml-boolean", "bad-negatable", "no-types", "bad-yaml"],
)
def test_bad_lexicon_files(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        build_miner(SemanticSignalSpec(name="bad-rule", languages=[str(path)]))


@pytest.mark.parametrize(
    "fields",
    [{"type": "regex"}, {"extra": {"sarcasm": ["x"]}}, {"disabled_types": ["nope"]}, {"name": ""}, {"colour": 1}],
    ids=["wrong-type", "unknown-extra-type", "unknown-disabled-type", "empty-name", "unknown-field"],
)
def test_spec_validation(fields: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SemanticSignalSpec.model_validate({"name": "r", **fields})


# ---- compiled forms: faster, same matches ---------------------------------------------------
@pytest.mark.parametrize(
    "phrases",
    [
        ["thank you", "re:\\bthanks?\\b", "re:\\bugh+|argh", "!!!", "re:wtf\\b", "many thanks"],
        ["re:\\b(?:a|b)c", "re:\\b[|]x", "re:\\b(a)|b", "talk to a human"],
    ],
)
def test_boundary_runs_match_exactly_like_one_group_per_phrase(phrases: list[str]) -> None:
    grouped = compile_phrases(phrases, "test")
    naive = re.compile("|".join(f"(?:{phrase_regex(p)})" for p in phrases), re.IGNORECASE)
    assert grouped.pattern != naive.pattern  # the rewrite happened
    texts = ["Thank you!", "ugh", "xargh", "bc ac", "|x", "a b", "TALK TO A HUMAN", "!!! wtf", "nothanks", "x|x"]
    for text in texts:
        assert [m.span() for m in grouped.finditer(text)] == [m.span() for m in naive.finditer(text)], text


@pytest.mark.parametrize(
    ("source", "has_variant"),
    [("\\bthanks\\b", True), ("\\W+\\S\\B\\D", True), ("\\bWTF\\b", False), ("\\x41", False), ("(?-i:x)", False),
     ("\\N{LATIN SMALL LETTER A}", False), ("[a-z]+", True)],
)
def test_lower_case_variant_only_where_it_is_equivalent(source: str, has_variant: bool) -> None:
    variant = lower_case_variant(re.compile(source, re.IGNORECASE))
    assert (variant is not None) == has_variant
    if variant is not None:
        assert not variant.flags & re.IGNORECASE
