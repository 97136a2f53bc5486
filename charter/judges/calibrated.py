"""A judge whose soft labels pass through a calibration fitted on human labels.

``judge.calibration=FILE`` (a ``calibration.json`` from ``charter calibrate``) wraps the configured
judge in :class:`CalibratedJudge`: the inner judge scores both orders as always, and ``p_a``
becomes the calibrated probability. Nothing the inner judge said is lost: its ``p_a`` stays in
``raw["uncalibrated_p_a"]``, its per-order probabilities stay where they were, and its own raw
output stays in ``raw``. The hard verdict can change only where the calibration learned that a
signal (say, a swap-inconsistent verdict) deserves less trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from charter.judge_eval.calibration import Calibration, JudgeSignals
from charter.judges.protocol import Comparison, Judge
from charter.records import Judgment


class CalibratedJudge:
    """Delegates to ``inner`` and replaces each ``p_a`` with the calibrated probability.

    Args:
        inner: the judge the calibration was fitted for (checked before this is built).
        calibration: the fitted calibration.
        calibration_sha256: hash of the calibration file, recorded on every judgment.
    """

    def __init__(self, inner: Judge, calibration: Calibration, calibration_sha256: str) -> None:
        self.inner = inner
        self.calibration = calibration
        self.calibration_sha256 = calibration_sha256
        self.model_id = inner.model_id
        self.method = inner.method
        engine = getattr(inner, "engine", None)
        if engine is not None:
            self.engine = engine

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        out = []
        for c, j in zip(comparisons, self.inner.judge(comparisons), strict=True):
            signals = JudgeSignals.of(j, c.response_a, c.response_b)
            p = self.calibration.p(signals, j.principle_id)
            raw = {
                **j.raw,
                "uncalibrated_p_a": j.p_a,
                "calibration_sha256": self.calibration_sha256,
            }
            out.append(replace(j, p_a=p, raw=raw))
        return out
