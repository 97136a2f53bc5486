"""Calibration fitted on human labels: a small model from a judge's own signals to the label.

A judge's soft label is only worth its number if a 0.8 is right four times in five. We fit a
logistic model from signals the judge already produced to the human label, and report the fit by
k-fold cross-validation, before and after, each with a bootstrap 95% interval.

Signals, all *odd* under exchanging the two responses (so the fitted model is exactly symmetric):

- ``mean_log_odds``: the mean of the two orders' log-odds that a is better;
- ``consistent_log_odds``: the same, times 1 when both orders pick the same winner and 0 when
  they do not, so the fit can trust swap-consistent verdicts more than inconsistent ones;
- for a jury, each member's log-odds instead (``member:NAME``);
- with ``remove_length``, ``length``: log((len_a + 1) / (len_b + 1)). It is fitted beside the
  judge's signals and then set to zero when predicting, the idea of length-controlled win rates
  applied to labels: whatever the judge's verdict owes to length is not credited to it.

There is no intercept. Exchanging a and b maps ``(lo_first, lo_swapped)`` to
``(-lo_swapped, -lo_first)`` and every signal to its negative, so P(a better) becomes exactly
1 - P(a better). That matters because labelled files store the human choice first: a model with
an intercept (or any even feature) fitted on rows where a is always the chosen response learns
"a wins" and reports agreement it does not have. Every row is therefore oriented at random
before fitting (a and b exchanged, the label flipped), which is also what gives the fitter two
classes to separate.

Fits per principle where a principle has ``min_per_principle`` labels or more, pooled otherwise;
a principle's coefficients are shrunk towards the pooled ones by ``n / (n + shrinkage)``.
The fitting itself is scikit-learn's L2-regularised ``LogisticRegression``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from charter.errors import InputError
from charter.judge_eval.reliability import expected_calibration_error
from charter.records import Judgment

FORMAT = "charter-calibration/1"
_EPS = 1e-6
LENGTH = "length"


def logit(p: float) -> float:
    """Log-odds of a probability, clamped away from 0 and 1."""
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class JudgeSignals:
    """What the calibration reads from one judgment of a vs b (log-odds that a is better)."""

    lo_first: float
    lo_swapped: float
    members: dict[str, float] = field(default_factory=dict)
    length_a: int = 0
    length_b: int = 0

    @staticmethod
    def of(judgment: Judgment, response_a: str, response_b: str) -> JudgeSignals:
        """Signals of a judgment; a jury's members come from ``raw["members"]``."""
        members = (judgment.raw or {}).get("members")
        votes = (
            {name: logit(float(m["p_a"])) for name, m in sorted(members.items())}
            if isinstance(members, dict)
            else {}
        )
        return JudgeSignals(
            lo_first=logit(judgment.p_first_order),
            lo_swapped=logit(judgment.p_swapped),
            members=votes,
            length_a=len(response_a),
            length_b=len(response_b),
        )

    def swapped(self) -> JudgeSignals:
        """The same comparison with a and b exchanged."""
        return JudgeSignals(
            lo_first=-self.lo_swapped,
            lo_swapped=-self.lo_first,
            members={k: -v for k, v in self.members.items()},
            length_a=self.length_b,
            length_b=self.length_a,
        )

    @property
    def raw_p(self) -> float:
        """The judge's own P(a better): both orders' log-odds averaged."""
        return 1.0 / (1.0 + math.exp(-(self.lo_first + self.lo_swapped) / 2))


def feature_names(signals: Sequence[JudgeSignals], remove_length: bool) -> list[str]:
    """The features a fit uses for these signals (a jury's members, or the two-order pair)."""
    members = sorted(signals[0].members) if signals and signals[0].members else []
    names = [f"member:{m}" for m in members] or ["mean_log_odds", "consistent_log_odds"]
    return [*names, LENGTH] if remove_length else names


def features(s: JudgeSignals, names: Sequence[str]) -> list[float]:
    """One row of the design matrix; every entry changes sign when a and b are exchanged."""
    mean = (s.lo_first + s.lo_swapped) / 2
    consistent = (s.lo_first > 0) == (s.lo_swapped > 0) and s.lo_first != 0
    out = []
    for name in names:
        if name == "mean_log_odds":
            out.append(mean)
        elif name == "consistent_log_odds":
            out.append(mean if consistent else 0.0)
        elif name == LENGTH:
            out.append(math.log((s.length_a + 1) / (s.length_b + 1)))
        elif name.startswith("member:"):
            key = name.split(":", 1)[1]
            if key not in s.members:
                raise InputError(f"the judgment has no jury member {key!r} that the fit needs")
            out.append(s.members[key])
        else:
            raise ValueError(f"unknown calibration feature {name!r}")
    return out


@dataclass(frozen=True)
class LabelledSignals:
    """A judged human pair: the judge's signals and whether a is the human choice (1) or not (0).

    A tie in the human label is not a row: calibration needs a side.
    """

    principle_id: str
    signals: JudgeSignals
    label: int

    def swapped(self) -> LabelledSignals:
        return replace(self, signals=self.signals.swapped(), label=1 - self.label)


def oriented_at_random(rows: Sequence[LabelledSignals], seed: int) -> list[LabelledSignals]:
    """Each row with a and b exchanged (and the label flipped) on a fair coin, so the fit can not
    learn which side a file stores the human choice on."""
    rng = np.random.default_rng(seed)
    flips = rng.random(len(rows)) < 0.5
    return [r.swapped() if f else r for r, f in zip(rows, flips, strict=True)]


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: coefficients per feature, pooled and per principle.

    ``judge_fingerprint`` and ``constitution_sha256`` say what it is valid for; applying it to
    another judge or constitution is refused (:func:`check_matches`).
    """

    features: list[str]
    pooled: dict[str, float]
    per_principle: dict[str, dict[str, float]]
    principle_counts: dict[str, int]
    remove_length: bool
    judge_fingerprint: str
    judge: str
    constitution_sha256: str
    data_sha256: str
    n: int
    cv: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def coefficients(self, principle_id: str) -> dict[str, float]:
        return self.per_principle.get(principle_id, self.pooled)

    def p(self, signals: JudgeSignals, principle_id: str) -> float:
        """Calibrated P(a better); the length feature, if fitted, is set to zero here."""
        return predict(self.coefficients(principle_id), self.features, signals)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def predict(coef: dict[str, float], names: Sequence[str], signals: JudgeSignals) -> float:
    """P(a better) under fitted coefficients, with the length feature (if any) set to zero."""
    x = features(signals, names)
    z = sum(coef[n] * v for n, v in zip(names, x, strict=True) if n != LENGTH)
    return float(_sigmoid(np.array(z)))


def load_calibration(path: str | Path) -> Calibration:
    """Read ``calibration.json``, with one clear line for a missing or malformed file."""
    path = Path(path)
    if not path.exists():
        raise InputError("calibration file not found", file=str(path), field="judge.calibration")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not JSON: {exc}", file=str(path), field="judge.calibration") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"not a charter calibration (expected format {FORMAT!r}); "
            "write one with `charter calibrate`",
            file=str(path),
            field="judge.calibration",
        )
    try:
        return Calibration(**data)
    except TypeError as exc:
        raise InputError(
            f"malformed calibration: {exc}", file=str(path), field="judge.calibration"
        ) from None


def check_matches(
    calibration: Calibration, path: str, judge_fingerprint: str, constitution_sha256: str | None
) -> None:
    """Refuse a calibration fitted for another judge or another constitution."""
    if calibration.judge_fingerprint != judge_fingerprint:
        raise InputError(
            f"this calibration was fitted for another judge ({calibration.judge}, fingerprint "
            f"{calibration.judge_fingerprint[:12]}), not this one (fingerprint "
            f"{judge_fingerprint[:12]}); refit it with `charter calibrate` and this judge",
            file=path,
            field="judge.calibration",
        )
    if constitution_sha256 is not None and calibration.constitution_sha256 != constitution_sha256:
        raise InputError(
            "this calibration was fitted under constitution "
            f"{calibration.constitution_sha256[:12]}, not {constitution_sha256[:12]}; "
            "refit it under this constitution",
            file=path,
            field="judge.calibration",
        )


@dataclass(frozen=True)
class FitSettings:
    """How ``charter calibrate`` fits (maps onto the ``calibration`` node of its config).

    Args:
        remove_length: fit a length covariate, then zero it when predicting.
        folds: k of the k-fold cross-validation.
        min_labels: fewer labelled pairs than this is refused (a fit on fewer says nothing).
        min_per_principle: labels a principle needs for a fit of its own.
        shrinkage: pseudo-count pulling a principle's coefficients towards the pooled ones.
        regularisation: scikit-learn's ``C`` (inverse L2 strength).
        bootstrap: resamples for the 95% intervals.
        seed: orientation, folds and bootstrap draws.
    """

    remove_length: bool = False
    folds: int = 5
    min_labels: int = 30
    min_per_principle: int = 40
    shrinkage: float = 40.0
    regularisation: float = 1.0
    bootstrap: int = 1000
    seed: int = 0


def _fit_coefficients(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:  # a principle whose few rows all fell on one side
        return np.zeros(x.shape[1])
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=1000)
    model.fit(x, y)
    return model.coef_[0]


def fit_coefficients(
    rows: Sequence[LabelledSignals], names: Sequence[str], settings: FitSettings
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, int]]:
    """Pooled and per-principle coefficients on already-oriented rows."""
    x = np.array([features(r.signals, names) for r in rows], dtype=float)
    y = np.array([r.label for r in rows])
    pooled = _fit_coefficients(x, y, settings.regularisation)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.principle_id] = counts.get(r.principle_id, 0) + 1
    per: dict[str, dict[str, float]] = {}
    for pid, n in sorted(counts.items()):
        if n < settings.min_per_principle:
            continue
        mask = np.array([r.principle_id == pid for r in rows])
        own = _fit_coefficients(x[mask], y[mask], settings.regularisation)
        w = n / (n + settings.shrinkage)
        per[pid] = dict(zip(names, (w * own + (1 - w) * pooled).tolist(), strict=True))
    return dict(zip(names, pooled.tolist(), strict=True)), per, counts


def _hard(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 where the verdict matches the label, 0.5 for an exact tie, else 0."""
    return np.where(p == 0.5, 0.5, ((p > 0.5) == (y == 1)).astype(float))


def _metrics(p: np.ndarray, y: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    pc = np.clip(p, _EPS, 1 - _EPS)
    p_label = np.where(y == 1, p, 1 - p)  # P(the human choice), as ECE reads it
    hard = _hard(p, y)
    # length-controlled agreement: mean of agreement where the human choice is longer / shorter
    longer = lengths * (2 * y - 1)  # > 0: the human choice is the longer response
    strata = [hard[longer > 0], hard[longer < 0]]
    means = [float(s.mean()) for s in strata if len(s)]
    return {
        "agreement": float(hard.mean()),
        "length_controlled_agreement": sum(means) / len(means) if means else 0.5,
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(p_label.tolist()),
    }


def metrics_with_intervals(
    p: np.ndarray, y: np.ndarray, lengths: np.ndarray, *, resamples: int, seed: int
) -> dict[str, dict[str, float]]:
    """Each metric with a percentile-bootstrap 95% interval over rows."""
    point = _metrics(p, y, lengths)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        for k, v in _metrics(p[idx], y[idx], lengths[idx]).items():
            draws[k].append(v)
    return {
        k: {
            "value": round(point[k], 4),
            "low": round(float(np.percentile(draws[k], 2.5)), 4),
            "high": round(float(np.percentile(draws[k], 97.5)), 4),
        }
        for k in point
    }


def cross_validated(
    rows: Sequence[LabelledSignals], names: Sequence[str], settings: FitSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out calibrated probabilities for every (oriented) row, and the raw ones."""
    from sklearn.model_selection import KFold

    folds = min(settings.folds, len(rows))
    calibrated = np.zeros(len(rows))
    split = KFold(n_splits=folds, shuffle=True, random_state=settings.seed).split(rows)
    for train, test in split:
        pooled, per, _ = fit_coefficients([rows[i] for i in train], names, settings)
        for i in test:
            coef = per.get(rows[i].principle_id, pooled)
            calibrated[i] = predict(coef, names, rows[i].signals)
    raw = np.array([r.signals.raw_p for r in rows])
    return calibrated, raw


def data_sha256(rows: Sequence[LabelledSignals]) -> str:
    """A hash of the labelled signals the fit saw (what `calibration.json` was fitted on)."""
    material = [[r.principle_id, asdict(r.signals), r.label] for r in rows]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class HeldOut:
    """Cross-validated predictions on the oriented rows: label, raw and calibrated P(a better)."""

    label: np.ndarray
    raw: np.ndarray
    calibrated: np.ndarray

    def on_label(self, p: np.ndarray) -> list[float]:
        """P(the human choice), as the reliability diagram reads it."""
        return np.where(self.label == 1, p, 1 - p).tolist()


def fit_calibration(
    rows: Sequence[LabelledSignals],
    settings: FitSettings,
    *,
    judge_fingerprint: str,
    judge: str,
    constitution_sha256: str,
    source: str,
) -> tuple[Calibration, HeldOut]:
    """Orient at random, cross-validate, then fit on every row.

    Returns:
        the calibration fitted on every row (with the cross-validated figures in ``cv``), and
        the held-out predictions the figures were computed from.

    Raises:
        InputError: fewer than ``settings.min_labels`` labelled pairs.
    """
    if len(rows) < settings.min_labels:
        raise InputError(
            f"{len(rows)} labelled pairs are too few to fit a calibration: it needs at least "
            f"{settings.min_labels} (calibration.min_labels), better 150 or more",
            file=source,
        )
    oriented = oriented_at_random(rows, settings.seed)
    names = feature_names([r.signals for r in oriented], settings.remove_length)
    calibrated, raw = cross_validated(oriented, names, settings)
    y = np.array([r.label for r in oriented])
    lengths = np.array([r.signals.length_a - r.signals.length_b for r in oriented], dtype=float)
    boot = {"resamples": settings.bootstrap, "seed": settings.seed}
    cv = {
        "folds": min(settings.folds, len(rows)),
        "n": len(rows),
        "before": metrics_with_intervals(raw, y, lengths, **boot),
        "after": metrics_with_intervals(calibrated, y, lengths, **boot),
    }
    pooled, per, counts = fit_coefficients(oriented, names, settings)
    calibration = Calibration(
        features=names,
        pooled=pooled,
        per_principle=per,
        principle_counts=counts,
        remove_length=settings.remove_length,
        judge_fingerprint=judge_fingerprint,
        judge=judge,
        constitution_sha256=constitution_sha256,
        data_sha256=data_sha256(rows),
        n=len(rows),
        cv=cv,
        settings=asdict(settings),
    )
    return calibration, HeldOut(label=y, raw=raw, calibrated=calibrated)
