"""GC pause accounting: per generation counts, totals and the longest pause; a long one is logged."""

from __future__ import annotations

import gc
import logging

import pytest

from stream.gc_pauses import GcPauses


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_pauses_are_summed_per_generation_and_a_long_one_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    pauses = GcPauses(clock, warn_s=1.0)
    for generation, took in ((0, 0.01), (0, 0.03), (2, 1.5), (1, 0.2)):
        pauses("start", {"generation": generation})
        clock.t += took
        with caplog.at_level(logging.WARNING, "stream.gc_pauses"):
            pauses("stop", {"generation": generation, "collected": 7})
    d = pauses.as_dict()
    assert d["collections"] == [2, 1, 1]
    assert d["pause_seconds"] == pytest.approx([0.04, 0.2, 1.5])
    assert d["longest_pause_seconds"] == pytest.approx([0.03, 0.2, 1.5])
    assert [r.getMessage() for r in caplog.records] == [
        "garbage collection of generation 2 stopped the process for 1.50 s (7 objects collected)"]


def test_a_stop_without_its_start_is_ignored() -> None:
    pauses = GcPauses(Clock())
    pauses("stop", {"generation": 0, "collected": 0})
    assert pauses.as_dict()["collections"] == [0, 0, 0]


def test_installed_it_sees_real_collections() -> None:
    pauses = GcPauses()
    pauses.install()
    try:
        gc.collect(1)
    finally:
        pauses.uninstall()
    assert pauses.collections[1] >= 1 and pauses.seconds[1] > 0.0
    assert pauses not in gc.callbacks
