from __future__ import annotations

from typing import NamedTuple

import pytest

from stream.gates.retries import Wording, all_skipped, note, recovered, skipped


class Call(NamedTuple):
    group: str
    start: int
    failed: bool
    input: str | None


def split(calls: list[Call], compare: bool = True) -> tuple[list[int], list[int]]:
    """Positions of the failed calls made good by a later identical call, and by another one."""
    bad = [c for c in calls if c.failed]
    retried, other = recovered(calls, lambda c: c.failed, lambda c: c.group, lambda c: c.start,
                               (lambda c: c.input) if compare else None, bad)  # fmt: skip
    return ([i for i, c in enumerate(calls) if id(c) in retried], [i for i, c in enumerate(calls) if id(c) in other])


@pytest.mark.parametrize(
    ("calls", "retried", "other"),
    [
        ([Call("a", 1, True, "x"), Call("a", 2, False, "x")], [0], []),
        ([Call("a", 1, True, "x"), Call("a", 2, False, "y")], [], [0]),
        ([Call("a", 1, True, "x"), Call("b", 2, False, "x")], [], []),  # another group
        ([Call("a", 2, False, "x"), Call("a", 3, True, "x")], [], []),  # the success came first
        ([Call("a", 1, True, None), Call("a", 2, False, None)], [], [0]),  # no input: never a retry
        ([Call("a", 1, True, "x"), Call("a", 2, False, "y"), Call("a", 3, True, "x"), Call("a", 4, False, "x")],
         [0, 2], []),  # the identical success is later than both
        ([Call("a", 1, True, "x"), Call("a", 2, False, "x"), Call("a", 3, True, "x"), Call("a", 4, False, "y")],
         [0], [2]),
        ([Call("a", 5, True, "x"), Call("a", 5, False, "x")], [], []),  # same start: not later
    ],
)
def test_recovered_splits_errors_by_what_made_them_good(calls: list[Call], retried: list[int], other: list[int]) -> None:
    assert split(calls) == (retried, other)
    assert split(calls, compare=False) == ([], sorted(retried + other))  # inputs not compared


def test_skipped_and_the_reason_notes_follow_the_setting() -> None:
    w = Wording("recovered", "recovered by the same", "recovered by another")
    retried, other = {1, 2}, {3}
    assert skipped(False, retried, other) == set()
    assert skipped(True, retried, other) == {1, 2, 3}
    assert skipped("identical_retry", retried, other) == {1, 2}
    assert note(False, retried, other, w) == " (3 recovered)"
    assert note(True, retried, other, w) == " (3 more recovered, ignored)"
    assert note("identical_retry", retried, other, w) == " (2 more recovered by the same, ignored; 1 recovered by another)"
    assert note("identical_retry", set(), other, w) == " (1 recovered by another)"
    assert note(False, set(), set(), w) == ""
    assert (all_skipped(True, w), all_skipped("identical_retry", w)) == ("recovered", "recovered by the same")
