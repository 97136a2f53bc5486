"""Prediction-powered accuracy estimates: nominal coverage over many seeds, a narrower interval
with an informative judge, and the audit-only estimate when the judge says nothing."""

from __future__ import annotations

import random

import pytest

from charter.judge_eval.ppi import ppi_mean, wilson


def simulate(seed: int, informative: bool, n_pairs: int = 400, n_audit: int = 40):
    """Published pairs with the judge's P(label right) and whether people agree (the truth).

    The judge is miscalibrated on purpose (its probabilities run 0.15 too high), so the naive
    mean of its probabilities is biased and only the audit can correct it.
    """
    rng = random.Random(seed)
    f, y = [], []
    for _ in range(n_pairs):
        q = rng.uniform(0.05, 1.0)  # how likely people are to agree with this label
        y.append(1.0 if rng.random() < q else 0.0)
        f.append(min(q + 0.15, 1.0) if informative else rng.uniform(0.5, 1.0))
    audit = set(rng.sample(range(n_pairs), n_audit))
    result = ppi_mean(
        [y[i] for i in sorted(audit)],
        [f[i] for i in sorted(audit)],
        [f[i] for i in range(n_pairs) if i not in audit],
    )
    return result, sum(y) / n_pairs


@pytest.mark.parametrize("informative", [True, False])
def test_covers_the_true_share_at_about_the_nominal_rate(informative: bool) -> None:
    seeds = range(400)
    covered = 0
    for seed in seeds:
        result, truth = simulate(seed, informative)
        covered += result.ppi.low <= truth <= result.ppi.high
    # 95% nominal; 400 seeds give a binomial standard error of about 1.1 points
    assert 0.91 <= covered / len(seeds) <= 0.99


def test_an_informative_judge_narrows_the_interval() -> None:
    ratios = []
    for seed in range(100):
        result, _ = simulate(seed, informative=True)
        ratios.append(result.ppi.width / result.audit_only.width)
        assert result.lam > 0
    ratios.sort()
    # the best a perfect ranking of these pairs could do is about 0.84 of the audit's width
    assert ratios[50] < 0.92


def test_a_judge_that_says_nothing_falls_back_to_the_audit() -> None:
    result = ppi_mean([1, 0, 1, 1, 0, 1], [0.7] * 6, [0.7] * 50)
    assert result.lam == 0
    assert result.ppi == result.audit_only
    assert result.ppi.estimate == pytest.approx(4 / 6)


def test_wilson_interval_stays_inside_zero_and_one() -> None:
    all_right = wilson(30, 30)
    assert all_right.estimate == 1.0 and all_right.high == pytest.approx(1.0)
    assert 0.85 < all_right.low < 1.0
    with pytest.raises(ValueError):
        ppi_mean([], [], [0.5])
