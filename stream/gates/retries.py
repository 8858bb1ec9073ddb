"""Errors a retry made good: the ``ignore_recovered`` setting of ``span_error``, ``exception`` and
``tool_error``.

An agent that hits a transient error (a 503, a timeout, a rate limit) and calls again usually gets
past it; counting the first error makes a successful trace a suspected failure, and every such
false positive is a judge call (README, judge economics). The setting:

* ``identical_retry`` — skip an error that a later call **with the same input** got past: for a
  span, a later span of the same name under the same parent without error whose input
  (:func:`stream.gates.trace_view.input_key`: a tool span's arguments compared as JSON, otherwise
  its system instructions and input messages) equals the failed span's; for a tool call, a later
  successful call of the same tool with the same arguments. What recorded no input is never taken
  for a retry.
* ``true`` — skip an error that any later call of the same span name / tool got past. Wider: a
  retry with other arguments can hide a wrong call.
* ``false`` — skip none (the default in code; the default policy uses ``identical_retry``).

"Later" is by start time; an error with no later success always counts. Whatever the setting, a
failing result's reason counts the recovered errors: those skipped ("1 more ..., ignored") and
those still counted, so stored gate results show what a wider setting would drop.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Literal, NamedTuple, TypeVar

from schemas.model import Span
from stream.gates.trace_view import input_key

IgnoreRecovered = bool | Literal["identical_retry"]

T = TypeVar("T")


class Wording(NamedTuple):
    """How a gate names recovered errors: by any later success / the same input / other input."""

    recovered: str
    same: str
    other: str


def recovered(
    items: Sequence[T], failed: Callable[[T], bool], group: Callable[[T], Hashable],
    start: Callable[[T], int], same_input: Callable[[T], Hashable | None] | None, bad: Sequence[T],
) -> tuple[set[int], set[int]]:  # fmt: skip
    """The failed items of ``bad`` (as ``id``s) that a later item of the same ``group`` without
    failure made good: those one with the same input did (``same_input``; None matches nothing),
    and the others (all of them when ``same_input`` is None: inputs are not compared). Linear in
    the items: each input is read once."""
    groups = {group(it) for it in bad}
    last_ok: dict[Hashable, int] = {}  # group -> start of its last item without failure
    last_same: dict[tuple[Hashable, Hashable], int] = {}  # (group, input) -> the same
    for it in items:
        if (g := group(it)) in groups and not failed(it):
            t = start(it)
            last_ok[g] = max(t, last_ok.get(g, t))
            if same_input is not None and (k := same_input(it)) is not None:
                last_same[(g, k)] = max(t, last_same.get((g, k), t))
    retried: set[int] = set()
    other: set[int] = set()
    for it in bad:
        g, t = group(it), start(it)
        if last_ok.get(g, t) > t:
            k = same_input(it) if same_input is not None else None
            (retried if k is not None and last_same.get((g, k), t) > t else other).add(id(it))
    return retried, other


def recovered_spans(spans: Sequence[Span], bad: Sequence[Span], failed: Callable[[Span], bool],
                    mode: IgnoreRecovered) -> tuple[set[int], set[int]]:  # fmt: skip
    """:func:`recovered` for spans: grouped by parent and name, compared by :func:`input_key` (only
    for ``identical_retry``: the other settings do not tell the two apart)."""
    compare = input_key if mode == "identical_retry" else None
    return recovered(spans, failed, _parent_and_name, _start, compare, bad)


def skipped(mode: IgnoreRecovered, retried: set[int], other: set[int]) -> set[int]:
    """The recovered errors (ids) ``mode`` skips."""
    return retried | other if mode is True else retried if mode else set()


def note(mode: IgnoreRecovered, retried: set[int], other: set[int], wording: Wording) -> str:
    """The end of a failing reason: the recovered errors skipped and those still counted."""
    if mode is True:
        items = [(len(retried) + len(other), wording.recovered, True)]
    elif mode:
        items = [(len(retried), wording.same, True), (len(other), wording.other, False)]
    else:
        items = [(len(retried) + len(other), wording.recovered, False)]
    parts = [f"{n} more {how}, ignored" if ignored else f"{n} {how}" for n, how, ignored in items if n]
    return f" ({'; '.join(parts)})" if parts else ""


def all_skipped(mode: IgnoreRecovered, wording: Wording) -> str:
    """How a passing reason names the errors that were all skipped."""
    return wording.recovered if mode is True else wording.same


def _parent_and_name(s: Span) -> tuple[str | None, str]:
    return s.parent_span_id, s.name


def _start(s: Span) -> int:
    return s.start_ns
