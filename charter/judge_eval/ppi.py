"""How many of a dataset's labels would people agree with: an estimate with a 95% interval.

A random audit of n published pairs, labelled by people, gives an unbiased estimate on its own,
but n is small (tens), so its interval is wide. The judge's own probability that each of its N
labels is right (``p_chosen``, calibrated where the run used a calibration) is available for
every pair, but it is biased by however miscalibrated the judge is. Prediction-powered inference
(Angelopoulos et al., 2023) combines the two: the judge's mean over all N pairs, corrected by the
mean error of the judge on the audit,

    theta = lambda * mean_N(f) + mean_n(y - lambda * f),

which is unbiased for any lambda because the audit is a random sample. lambda is tuned on the
audit to minimise the variance (the "PPI++" power tuning), clipped to [0, 1]: 0 gives back the
audit-only mean, so a useless judge costs nothing but a little estimation noise, and a
well-calibrated judge narrows the interval. The interval is the normal one from the two
independent parts' variances.

The estimate needs the audit to be a *random* sample of the published pairs (``charter review
export sample=random``). Labels from the uncertainty-ranked queue are chosen because the judge
was unsure; nothing about them generalises to the rest, so they give no estimate here.

We do not depend on the ``ppi-python`` package: the mean estimator is these few lines, while the
package pulls in numba, statsmodels and a downloader for its example data sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import norm


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval."""

    estimate: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    """Unbiased sample variance (0 for a single value)."""
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def wilson(successes: float, n: int, alpha: float = 0.05) -> Interval:
    """Wilson score interval of a proportion: the audit-only estimate, sound at small n."""
    if n == 0:
        raise ValueError("no audited labels")
    z = float(norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class PPIResult:
    """The prediction-powered estimate, the audit-only ones beside it, and what went in.

    ``audit_only`` is the same estimator with lambda = 0 (the audit's mean, normal interval), so
    the two widths compare like for like; ``audit_wilson`` is the interval we would quote for the
    audit alone at small n.
    """

    ppi: Interval
    audit_only: Interval
    audit_wilson: Interval
    lam: float
    n_audit: int
    n_unlabelled: int


def ppi_mean(
    audit_labels: Sequence[float],
    audit_predictions: Sequence[float],
    unlabelled_predictions: Sequence[float],
    alpha: float = 0.05,
) -> PPIResult:
    """Prediction-powered mean of the labels, power-tuned.

    Args:
        audit_labels: y in {0, 1} for each audited pair (1: people agree with the label).
        audit_predictions: the judge's probability that each audited label is right.
        unlabelled_predictions: the same probability for the pairs nobody audited.
        alpha: 1 - the interval's coverage.
    """
    y, f = list(audit_labels), list(audit_predictions)
    n, big_n = len(y), len(unlabelled_predictions)
    if n == 0:
        raise ValueError("no audited labels")
    if len(f) != n:
        raise ValueError("one prediction per audited label")
    z = float(norm.ppf(1 - alpha / 2))
    audit_wilson = wilson(sum(y), n, alpha)
    half_audit = z * math.sqrt(_var(y) / n)
    my = _mean(y)
    audit_only = Interval(my, max(0.0, my - half_audit), min(1.0, my + half_audit))
    if big_n == 0:
        return PPIResult(audit_only, audit_only, audit_wilson, 0.0, n, 0)
    var_f = _var([*f, *unlabelled_predictions])
    mf = _mean(f)
    cov = sum((a - my) * (b - mf) for a, b in zip(y, f, strict=True)) / max(n - 1, 1)
    lam = 0.0 if var_f == 0 else cov / ((1 + n / big_n) * var_f)
    lam = min(max(lam, 0.0), 1.0)
    residuals = [a - lam * b for a, b in zip(y, f, strict=True)]
    estimate = lam * _mean(unlabelled_predictions) + _mean(residuals)
    variance = lam * lam * _var(unlabelled_predictions) / big_n + _var(residuals) / n
    half = z * math.sqrt(variance)
    ppi = Interval(estimate, max(0.0, estimate - half), min(1.0, estimate + half))
    return PPIResult(ppi, audit_only, audit_wilson, lam, n, big_n)
