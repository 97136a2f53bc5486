"""Order combination and ranking: the arithmetic under every soft label."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.judges.debias import combine_orders, sigmoid
from charter.judges.ranking import bradley_terry, bradley_terry_many, win_rates


def test_constant_position_bias_cancels_in_log_odds() -> None:
    # true evidence +0.4 for a; the judge adds +3 log-odds to whatever is in position A
    bias, signal = 3.0, 0.4
    first = signal + bias  # a shown as A
    swapped = signal - bias  # a shown as B: bias now favours b
    combined = combine_orders(first, swapped, "log_odds")
    assert combined.p_a == pytest.approx(sigmoid(signal))
    assert not combined.swap_consistent  # each order alone followed the position


def test_probability_mean_is_the_cai_average() -> None:
    combined = combine_orders(math.log(0.8 / 0.2), math.log(0.6 / 0.4), "probability")
    assert combined.p_first_order == pytest.approx(0.8)
    assert combined.p_swapped == pytest.approx(0.6)
    assert combined.p_a == pytest.approx(0.7)
    assert combined.swap_consistent


@pytest.mark.parametrize("first, swapped", [(2.0, -1.0), (-0.3, 0.1), (0.5, 0.5), (-2.0, -0.1)])
def test_both_combinations_give_the_same_hard_verdict(first: float, swapped: float) -> None:
    a = combine_orders(first, swapped, "log_odds").p_a
    b = combine_orders(first, swapped, "probability").p_a
    assert (a > 0.5) == (b > 0.5)


def test_unknown_combination_is_refused() -> None:
    with pytest.raises(ValueError, match="log_odds"):
        combine_orders(0.1, 0.1, "median")  # type: ignore[arg-type]


def test_win_rates_and_bradley_terry_agree_on_a_clear_order() -> None:
    ids = ["x", "y", "z"]
    outcomes = [("x", "y", 0.9), ("x", "z", 0.95), ("y", "z", 0.8)]
    wr = win_rates(ids, outcomes)
    bt = bradley_terry(ids, outcomes)
    assert sorted(ids, key=lambda c: -wr[c]) == ["x", "y", "z"]
    assert sorted(ids, key=lambda c: -bt[c]) == ["x", "y", "z"]
    assert sum(bt.values()) == pytest.approx(0.0, abs=1e-6)


def test_bradley_terry_stays_finite_when_one_candidate_wins_everything() -> None:
    bt = bradley_terry(["a", "b"], [("a", "b", 1.0)])
    assert all(math.isfinite(v) for v in bt.values())
    assert bt["a"] > bt["b"]


def test_unjudged_candidate_gets_neutral_scores() -> None:
    wr = win_rates(["a", "b", "c"], [("a", "b", 0.7)])
    assert wr["c"] == 0.5


@st.composite
def _problem(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str, float]]]:
    """K candidates (0-9) and any judged subset of their pairs, some twice, soft or hard."""
    k = draw(st.integers(0, 9))
    ids = [f"p/{i}" for i in range(k)]
    pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    judged = draw(st.lists(st.sampled_from(pairs), max_size=40)) if pairs else []
    p = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0, 1))
    return ids, [(a, b, draw(p)) for a, b in judged]


@settings(max_examples=300, deadline=None)
@given(problems=st.lists(_problem(), max_size=12))
def test_the_batched_fit_gives_each_prompt_its_own_fit_to_the_bit(problems) -> None:
    """rank() fits a window's prompts together; each must get exactly what it alone gets."""
    assert bradley_terry_many(problems) == [bradley_terry(ids, o) for ids, o in problems]
