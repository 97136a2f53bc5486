"""The page's figures for a run that judged every comparison under every principle.

A ``principle_per=all`` run writes one judgment per pair (``principle_id`` ``all``) with each
principle's own figures in ``raw["per_principle"]``. The page shows how the principles relate
(:class:`~charter.judges.principles.PrincipleAgreement`: agreement matrix, decisiveness,
principles that never separate two responses), and its per-principle table gets one row per
principle, unpacked from those judgments, beside the combined ``all`` row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from charter.judges.principles import (
    ALL_PRINCIPLES,
    FLAT_BELOW,
    PrincipleAgreement,
    agreement_of,
    principle_scores,
)
from charter.records import Judgment


@dataclass(frozen=True)
class PrincipleVectors:
    """What the "Principles compared" section shows.

    ``weights`` and ``aggregation`` are those the run combined the principles with;
    ``flat_below`` is the threshold under which a principle never separates responses.
    """

    agreement: PrincipleAgreement
    weights: dict[str, float]
    aggregation: str
    flat_below: float = FLAT_BELOW


def gather_vectors(judgments: list[Judgment]) -> PrincipleVectors | None:
    """The section's figures, or None for a run that drew one principle per comparison."""
    found = agreement_of(judgments)
    if found is None:
        return None
    first = next(j for j in judgments if principle_scores(j) is not None)
    return PrincipleVectors(
        agreement=found,
        weights={str(k): float(v) for k, v in first.raw["principle_weights"].items()},
        aggregation=str(first.raw.get("principle_aggregation", "log_odds")),
    )


def unpacked(judgment: Judgment) -> list[Judgment]:
    """A combined judgment's per-principle judgments ([] for any other)."""
    per = judgment.raw.get("per_principle") if judgment.raw else None
    if not isinstance(per, dict):
        return []
    return [
        Judgment(
            prompt_id=judgment.prompt_id,
            candidate_a=judgment.candidate_a,
            candidate_b=judgment.candidate_b,
            principle_id=pid,
            p_first_order=f["p_first_order"],
            p_swapped=f["p_swapped"],
            p_a=f["p_a"],
            swap_consistent=f["swap_consistent"],
            judge_model=judgment.judge_model,
            judge_method=judgment.judge_method,
            raw=f.get("raw") or {},
        )
        for pid, f in per.items()
    ]


def per_principle_inputs(
    judgments: list[Judgment], pairs: list[dict[str, Any]]
) -> tuple[list[Judgment], list[dict[str, Any]]]:
    """What the per-principle table is computed from: unchanged for a one-principle run; for a
    ``principle_per=all`` run, the combined judgments and pairs (as ``all``) plus each
    principle's own judgments, with each pair booked to every principle at the margin that
    principle alone gives the published label (``2 * score - 1``; below 0 where it opposed)."""
    per = [u for j in judgments for u in unpacked(j)]
    if not per:
        return judgments, pairs
    rows = [{**p, "principle_ids": [ALL_PRINCIPLES]} for p in pairs]
    rows += [
        {"principle_ids": [pid], "margin": 2 * score - 1}
        for p in pairs
        for pid, score in (p.get("principle_scores") or {}).items()
    ]
    return [*judgments, *per], rows
