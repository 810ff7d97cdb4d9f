"""The propagation benchmark's span ratio: a round whose changes two polls found is left out of it."""

from __future__ import annotations

import math

from bench.scenarios import kept_rounds, span_ratio, split_over_polls


def test_one_polls_changes_are_one_round_even_when_slow() -> None:
    assert not split_over_polls([0.0, 0.5, 1.2, 2.0], poll_interval=10)
    assert not split_over_polls([0.0 + 0.9 * i for i in range(20)], poll_interval=10)  # 17 s, never a 5 s pause


def test_a_pause_of_half_an_interval_is_a_second_poll() -> None:
    assert split_over_polls([0.0, 0.3, 7.4, 7.9], poll_interval=10)


def test_the_ratio_is_over_the_rounds_one_poll_found() -> None:
    assert span_ratio([11.2, 3.0], [2.0, 2.0], [True, False]) == 1.5
    assert kept_rounds([11.2, 3.0], [True, False]) == [1]


def test_runs_that_did_not_record_splits_keep_every_round() -> None:
    assert span_ratio([3.0, 3.0], [2.0, 2.0]) == 1.5


def test_no_round_left_is_no_ratio() -> None:
    assert math.isnan(span_ratio([11.0], [2.0], [True]))
