"""How much a candidate principle would raise the judge's agreement with people, and the pick.

A run labels each comparison under one principle, drawn by weight from the seed. So a row's
baseline is its drawn verdict ``a_d`` (1 agree, 0.5 tie, 0 disagree) and the constitution's
agreement is their mean. With a candidate ``c`` judged on the same row (``a_c``):

- **add** (``c`` joins with weight ``w``; the audited principles weigh ``W`` in all): under the
  augmented constitution a comparison draws ``c`` with probability ``s = w / (W + w)`` and
  otherwise a principle drawn by the old weights. Averaging over that draw and keeping the seed's
  draw for the rest, the row's agreement moves by ``s * (a_c - a_d)``; the add gain of a split
  is its mean. It is the expected change of the constitution's agreement (unbiased over seeds,
  since ``a_d`` is a draw of the old constitution's verdict), and it uses every row instead of
  the one in K+1 that a single redraw would move. ``gain_if_drawn`` is the same without ``s``:
  the change on the comparisons that draw ``c``.
- **replace** (``c`` takes the weakest principle's place and weight): the draw depends on the
  weights and their order, not on the text, so for the same seed exactly the rows that drew the
  weakest principle ``k`` now draw ``c``; they move by ``a_c - a_k``, every other row by 0.
  The weakest is the principle with the lowest agreement on the held-in rows that drew it.

With ``principle=ID`` the audited set is that one principle (``W`` its weight, and the weakest).

Nothing held out is used to choose: the proposer is shown held-in disagreements only, the
weakest principle, the ranking and the shortlist come from held-in figures, and the held-out
figures of the shortlist are a pass/fail check read in held-in order, so they can veto a
candidate but never reorder them. Each of the ``top_k`` checks is a chance for a useless
candidate to pass by luck (about 2.5% each under the ``interval`` check, 50% under
``positive``), so the pick's held-out gain is slightly optimistic; a fresh labelled set, or a
larger one, is the real test.

Intervals: agreement on a split gets a Wilson interval (:func:`charter.judge_eval.ppi.wilson`,
fractional for ties); a gain is a paired difference on the same rows, where the difference of
two Wilson intervals would ignore the pairing and come out several times too wide, so it gets a
percentile bootstrap over rows, as the calibration metrics do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from charter.errors import InputError
from charter.judge_eval.ppi import Interval, wilson

HeldOutCheck = Literal["positive", "interval"]


@dataclass(frozen=True)
class ScoreSettings:
    """How candidates are scored and picked (the ``scoring`` node of ``conf/audit.yaml``).

    Args:
        held_out_fraction: share of pairs held out (by a seeded hash of the pair id).
        candidate_weight: a candidate's weight when added (when it replaces a principle it
            takes that principle's weight).
        top_k: candidates with a positive held-in gain that are checked on the held-out split.
        held_out_check: what the held-out add gain must show to be picked: ``interval`` (its
            95% interval lies above 0) or ``positive`` (its estimate is above 0).
        bootstrap: resamples for the gains' intervals.
        seed: the split, the bootstrap draws.
    """

    held_out_fraction: float = 0.3
    candidate_weight: float = 1.0
    top_k: int = 3
    held_out_check: HeldOutCheck = "interval"
    bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.held_out_fraction < 1:
            raise InputError(
                f"must be between 0 and 1, got {self.held_out_fraction}",
                field="scoring.held_out_fraction",
            )
        if not 0 < self.candidate_weight < float("inf"):
            raise InputError(
                f"must be a finite number > 0, got {self.candidate_weight}",
                field="scoring.candidate_weight",
            )
        if self.top_k < 1:
            raise InputError(f"must be at least 1, got {self.top_k}", field="scoring.top_k")
        if self.held_out_check not in ("positive", "interval"):
            raise InputError(
                f"must be 'positive' or 'interval', got {self.held_out_check!r}",
                field="scoring.held_out_check",
            )
        if self.bootstrap < 100:
            raise InputError(
                f"must be at least 100, got {self.bootstrap}", field="scoring.bootstrap"
            )


def add_gains(base: Sequence[float], under: Sequence[float], share: float) -> list[float]:
    """Per row, the expected change in agreement when a principle drawn with ``share`` joins."""
    return [share * (c - b) for b, c in zip(base, under, strict=True)]


def replace_gains(
    base: Sequence[float], under: Sequence[float], drawn: Sequence[str], weakest: str
) -> list[float]:
    """Per row, the change in agreement when the candidate takes ``weakest``'s place."""
    return [c - b if d == weakest else 0.0 for b, c, d in zip(base, under, drawn, strict=True)]


def mean_interval(values: Sequence[float], *, resamples: int, seed: int) -> Interval:
    """The mean of ``values`` with a percentile-bootstrap 95% interval over rows."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no rows to estimate a mean from")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    return Interval(
        float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
    )


@dataclass(frozen=True)
class Gain:
    """A candidate's effect on one split, for one way of using it (add or replace)."""

    n: int
    agreement_before: Interval
    agreement_after: Interval
    gain: Interval
    gain_if_drawn: float | None = None

    def as_dict(self) -> dict[str, Any]:
        def cell(i: Interval) -> dict[str, float]:
            return {"value": round(i.estimate, 4), "low": round(i.low, 4), "high": round(i.high, 4)}

        out: dict[str, Any] = {
            "n": self.n,
            "agreement_before": cell(self.agreement_before),
            "agreement_after": cell(self.agreement_after),
            "gain": cell(self.gain),
        }
        if self.gain_if_drawn is not None:
            out["gain_if_drawn"] = round(self.gain_if_drawn, 4)
        return out


def gain_on(
    base: Sequence[float],
    gains: Sequence[float],
    *,
    resamples: int,
    seed: int,
    gain_if_drawn: float | None = None,
) -> Gain:
    """Agreement before and after (Wilson) and the paired gain (bootstrap) on one split."""
    n = len(base)
    before = sum(base)
    after = min(max(before + sum(gains), 0.0), float(n))  # float noise at the ends
    return Gain(
        n=n,
        agreement_before=wilson(before, n),
        agreement_after=wilson(after, n),
        gain=mean_interval(gains, resamples=resamples, seed=seed),
        gain_if_drawn=gain_if_drawn,
    )


@dataclass(frozen=True)
class PrincipleAgreement:
    """How often the judge agreed with people on the held-in rows that drew one principle."""

    principle_id: str
    agreement: float
    n: int


def per_principle(drawn: Sequence[str], base: Sequence[float]) -> list[PrincipleAgreement]:
    """Agreement per drawn principle, lowest first (ties: more rows first, then id)."""
    by_id: dict[str, list[float]] = defaultdict(list)
    for pid, a in zip(drawn, base, strict=True):
        by_id[pid].append(a)
    rows = [PrincipleAgreement(pid, sum(v) / len(v), len(v)) for pid, v in by_id.items()]
    return sorted(rows, key=lambda r: (r.agreement, -r.n, r.principle_id))


def shortlist(held_in_gain: Mapping[str, float], top_k: int) -> list[str]:
    """The ``top_k`` candidates with the largest positive held-in add gain (ties by id)."""
    positive = [cid for cid, g in held_in_gain.items() if g > 0]
    return sorted(positive, key=lambda cid: (-held_in_gain[cid], cid))[:top_k]


def passes(gain: Interval, check: HeldOutCheck) -> bool:
    """The held-out check: the gain is above 0 (``positive``) or its whole interval is
    (``interval``)."""
    return gain.low > 0 if check == "interval" else gain.estimate > 0


def select(
    shortlisted: Sequence[str], held_out_gain: Mapping[str, Interval], check: HeldOutCheck
) -> str | None:
    """The first shortlisted candidate (held-in order) that passes the held-out check."""
    return next((cid for cid in shortlisted if passes(held_out_gain[cid], check)), None)
