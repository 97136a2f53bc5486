"""The calibration fit: it recovers a known bias, cannot learn the stored order, and is refused
where it does not belong."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from charter.errors import InputError
from charter.judge_eval.calibration import (
    Calibration,
    FitSettings,
    JudgeSignals,
    LabelledSignals,
    check_matches,
    fit_calibration,
    load_calibration,
)


def _fit(rows: list[LabelledSignals], **settings: object) -> tuple[Calibration, object]:
    return fit_calibration(
        rows,
        FitSettings(bootstrap=50, **settings),  # type: ignore[arg-type]
        judge_fingerprint="f" * 64,
        judge="synthetic",
        constitution_sha256="c" * 64,
        source="<synthetic>",
    )


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def overconfident_rows(n: int, scale: float, seed: int = 0) -> list[LabelledSignals]:
    """A judge whose log-odds are ``scale`` times the truth; a = the human choice (label 1), as
    labelled files store it, so each row is the human choice first."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        z = rng.gauss(0, 1.5)
        a_wins = rng.random() < _sigmoid(z)
        lo = scale * z
        signals = JudgeSignals(lo_first=lo, lo_swapped=lo, length_a=100, length_b=100)
        # stored as labelled files store pairs: the human choice first, label 1
        rows.append(LabelledSignals("p", signals if a_wins else signals.swapped(), 1))
    return rows


def test_recovers_a_known_overconfidence() -> None:
    calibration, held_out = _fit(overconfident_rows(3000, scale=3.0))
    # every synthetic verdict is swap-consistent, so both coefficients apply: their sum is 1/3
    slope = calibration.pooled["mean_log_odds"] + calibration.pooled["consistent_log_odds"]
    assert slope == pytest.approx(1 / 3, abs=0.06)
    before, after = calibration.cv["before"], calibration.cv["after"]
    assert after["ece"]["value"] < 0.05 < before["ece"]["value"]
    assert after["log_loss"]["value"] < before["log_loss"]["value"]
    # the hard verdict of a rescaled judge is unchanged
    assert after["agreement"]["value"] == pytest.approx(before["agreement"]["value"], abs=0.01)
    assert before["ece"]["low"] <= before["ece"]["value"] <= before["ece"]["high"]


def test_a_judge_without_signal_cannot_learn_the_stored_order() -> None:
    """The leak: labelled files put the human choice first, so a fit that saw rows unoriented
    (or had an intercept) would learn "a wins" and report agreement near 1."""
    rng = random.Random(1)
    rows = [
        LabelledSignals(
            "p",
            # position bias (A is favoured by 2 nats) plus noise; nothing about quality
            JudgeSignals(lo_first=2 + rng.gauss(0, 1), lo_swapped=-2 + rng.gauss(0, 1)),
            1,
        )
        for _ in range(400)
    ]
    calibration, held_out = _fit(rows)
    assert 0.4 < calibration.cv["after"]["agreement"]["value"] < 0.6
    # the fitted model is exactly antisymmetric: exchanging a and b gives 1 - p
    for row in rows[:20]:
        p = calibration.p(row.signals, "p")
        assert calibration.p(row.signals.swapped(), "p") == pytest.approx(1 - p, abs=1e-12)
    # and the orientation really was random: about half the rows were flipped
    assert 0.4 < float(np.mean(held_out.label)) < 0.6


def test_length_covariate_is_fitted_then_zeroed() -> None:
    """People here prefer the longer response; the judge's signal is independent of length."""
    rng = random.Random(2)
    rows = []
    for _ in range(3000):
        z = rng.gauss(0, 1)
        la, lb = rng.randint(50, 400), rng.randint(50, 400)
        length = math.log((la + 1) / (lb + 1))
        a_wins = rng.random() < _sigmoid(z + 1.5 * length)
        signals = JudgeSignals(z, z, length_a=la, length_b=lb)
        rows.append(LabelledSignals("p", signals if a_wins else signals.swapped(), 1))
    calibration, _ = _fit(rows, remove_length=True)
    assert calibration.features[-1] == "length"
    assert calibration.pooled["length"] == pytest.approx(1.5, abs=0.25)
    short = JudgeSignals(0.7, 0.7, length_a=60, length_b=390)
    long = JudgeSignals(0.7, 0.7, length_a=390, length_b=60)
    assert calibration.p(short, "p") == pytest.approx(calibration.p(long, "p"), abs=1e-12)
    plain, _ = _fit(rows)
    assert "length" not in plain.features


def test_principles_with_enough_labels_get_their_own_shrunk_fit() -> None:
    sharp = [LabelledSignals("sharp", r.signals, r.label) for r in overconfident_rows(600, 1.0)]
    blunt = [LabelledSignals("blunt", r.signals, r.label) for r in overconfident_rows(600, 4.0, 7)]
    few = [LabelledSignals("rare", r.signals, r.label) for r in overconfident_rows(10, 1.0, 9)]
    calibration, _ = _fit([*sharp, *blunt, *few], min_per_principle=100, shrinkage=100.0)
    assert set(calibration.per_principle) == {"sharp", "blunt"}

    def slope(coef: dict[str, float]) -> float:
        return coef["mean_log_odds"] + coef["consistent_log_odds"]

    pooled = slope(calibration.pooled)
    assert (
        slope(calibration.per_principle["blunt"])
        < pooled
        < slope(calibration.per_principle["sharp"])
    )
    assert calibration.coefficients("rare") == calibration.pooled
    # shrunk towards the pooled fit: 600 / (600 + 100) of the own fit, not all of it
    assert slope(calibration.per_principle["sharp"]) < 0.98


def test_a_jury_is_fitted_on_its_members() -> None:
    rng = random.Random(3)
    rows = []
    for _ in range(1500):
        z = rng.gauss(0, 1.5)
        members = {"good": z, "noise": rng.gauss(0, 1.5)}
        signals = JudgeSignals(0.0, 0.0, members=members)
        a_wins = rng.random() < _sigmoid(z)
        rows.append(LabelledSignals("p", signals if a_wins else signals.swapped(), 1))
    calibration, _ = _fit(rows)
    assert calibration.features == ["member:good", "member:noise"]
    assert calibration.pooled["member:good"] > 0.8
    assert abs(calibration.pooled["member:noise"]) < 0.15


def test_too_few_labels_says_how_many_it_needs() -> None:
    with pytest.raises(InputError, match="at least 30"):
        _fit(overconfident_rows(12, 1.0))


def test_refused_for_another_judge_or_constitution(tmp_path: Path) -> None:
    calibration, _ = _fit(overconfident_rows(100, 2.0))
    path = tmp_path / "calibration.json"
    path.write_text(calibration.to_json())
    loaded = load_calibration(path)
    assert loaded == calibration
    check_matches(loaded, str(path), "f" * 64, "c" * 64)
    with pytest.raises(InputError, match="another judge"):
        check_matches(loaded, str(path), "e" * 64, "c" * 64)
    with pytest.raises(InputError, match="under constitution"):
        check_matches(loaded, str(path), "f" * 64, "d" * 64)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"features": []}))
    with pytest.raises(InputError, match="not a charter calibration"):
        load_calibration(bad)
    bad.write_text("{oops")
    with pytest.raises(InputError, match="not JSON"):
        load_calibration(bad)
