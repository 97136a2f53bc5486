"""The accuracy audit of a run: a random sample for people, and the estimate their labels give.

``charter review export RUN sample=random`` draws the queue uniformly at random from the
published pairs (seeded), instead of the least-sure first. After ``review import``, the labels of
such a queue estimate the share of published pairs whose label people would agree with, by
prediction-powered inference over the judge's probabilities on every pair
(:mod:`charter.judge_eval.ppi`), with the audit-only estimate beside it.

Labels from the uncertainty-ranked queue are a deliberately biased sample (the pairs the judge
was least sure of), chosen deterministically, so no weighting recovers the rest: the report says
so instead of giving a number.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from charter.judge_eval.ppi import ppi_mean

RANDOM = "random"
UNCERTAINTY = "uncertainty"


def random_sample(rows: Sequence[dict[str, Any]], budget: int, seed: int) -> list[int]:
    """Indices of ``budget`` rows drawn uniformly without replacement, in draw order."""
    return random.Random(seed).sample(range(len(rows)), min(budget, len(rows)))


def probabilities_kind(judgments: Sequence[dict[str, Any]]) -> str:
    """``calibrated`` when the run's judge applied a calibration, else ``raw``."""
    raws = [j.get("raw") or {} for j in judgments]
    return "calibrated" if raws and all("uncalibrated_p_a" in r for r in raws) else "raw"


def accuracy_estimate(
    rows: Sequence[dict[str, Any]],
    selections: dict[str, str],
    agreed: dict[str, bool],
    review_id_of: Any,
    probabilities: str,
) -> dict[str, Any]:
    """The estimated share of published pairs people would agree with, or why there is none.

    Args:
        rows: the run's published pairs (with the judge's ``p_chosen``).
        selections: review id -> how its queue item was selected (``random`` / ``uncertainty``).
        agreed: review id -> whether the human label matched the judge's (ties left out).
        review_id_of: a pairs row -> its review id.
        probabilities: ``calibrated`` or ``raw``, said in the report.
    """
    audit = {rid: ok for rid, ok in agreed.items() if selections.get(rid) == RANDOM}
    if not audit:
        ranked = any(selections.get(rid) == UNCERTAINTY for rid in agreed)
        return {
            "available": False,
            "reason": (
                "the labels came from the uncertainty-ranked queue, which picks the pairs the "
                "judge was least sure of; they cannot give an unbiased estimate for the rest. "
                "Draw a random audit: charter review export RUN sample=random"
                if ranked
                else "no audited labels"
            ),
        }
    p = {review_id_of(r): float(r["p_chosen"]) for r in rows}
    labelled = [rid for rid in audit if rid in p]
    result = ppi_mean(
        [1.0 if audit[rid] else 0.0 for rid in labelled],
        [p[rid] for rid in labelled],
        [v for rid, v in p.items() if rid not in audit],
    )

    def interval(i: Any) -> dict[str, float]:
        return {
            "estimate": round(i.estimate, 4),
            "low": round(i.low, 4),
            "high": round(i.high, 4),
            "width": round(i.width, 4),
        }

    return {
        "available": True,
        "estimand": "share of published pairs whose label people would agree with",
        "pairs": len(rows),
        "audited": result.n_audit,
        "judge_probabilities": probabilities,
        "ppi": {**interval(result.ppi), "lambda": round(result.lam, 4)},
        "audit_only": {
            **interval(result.audit_only),
            "method": "the audit's mean, normal 95% interval (the same estimator, lambda = 0)",
            "wilson": interval(result.audit_wilson),
        },
        "width_ratio_ppi_to_audit_only": round(result.ppi.width / result.audit_only.width, 4)
        if result.audit_only.width
        else None,
        "method": "prediction-powered inference (power-tuned), normal 95% interval",
    }


def card_section(estimate: dict[str, Any] | None) -> list[str]:
    """The dataset card's lines on label accuracy (none when nothing was audited)."""
    if not estimate:
        return []
    if not estimate.get("available"):
        return ["## Label accuracy", "", f"No estimate: {estimate['reason']}", ""]
    ppi, audit = estimate["ppi"], estimate["audit_only"]
    return [
        "## Label accuracy",
        "",
        f"People would agree with an estimated **{ppi['estimate']:.1%}** of the "
        f"{estimate['pairs']} published labels (95% interval {ppi['low']:.1%} to "
        f"{ppi['high']:.1%}): prediction-powered inference from a random audit of "
        f"{estimate['audited']} pairs and the judge's {estimate['judge_probabilities']} "
        "probabilities on every pair.",
        f"The audit alone gives {audit['estimate']:.1%} ({audit['low']:.1%} to "
        f"{audit['high']:.1%}); the interval width ratio is "
        f"{estimate['width_ratio_ppi_to_audit_only']}.",
        "",
    ]
