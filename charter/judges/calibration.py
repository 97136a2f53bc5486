"""Calibration of soft labels: expected calibration error and a reliability table.

A judge's ``p_chosen`` is only useful as a soft label (or for margin filtering) if a 0.8 means
"right four times in five". We bin the judge's confidence in its own verdict
(``max(p, 1 - p)``) and compare each bin's mean confidence with how often the verdict matched
the human label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin: its range, size, mean confidence and accuracy."""

    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


def reliability(p_human_choice: Sequence[float], bins: int = 5) -> list[ReliabilityBin]:
    """Bin verdicts by confidence in [0.5, 1]; accuracy = the verdict matched the human label."""
    width = 0.5 / bins
    grouped: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    for p in p_human_choice:
        confidence = max(p, 1.0 - p)
        correct = 1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0
        index = min(int((confidence - 0.5) / width), bins - 1)
        grouped[index].append((confidence, correct))
    table = []
    for i, members in enumerate(grouped):
        if not members:
            continue
        table.append(
            ReliabilityBin(
                low=0.5 + i * width,
                high=0.5 + (i + 1) * width,
                count=len(members),
                confidence=sum(c for c, _ in members) / len(members),
                accuracy=sum(a for _, a in members) / len(members),
            )
        )
    return table


def expected_calibration_error(p_human_choice: Sequence[float], bins: int = 5) -> float:
    """Mean |accuracy - confidence| over bins, weighted by bin size."""
    table = reliability(p_human_choice, bins)
    n = sum(b.count for b in table)
    return sum(b.count * abs(b.accuracy - b.confidence) for b in table) / n if n else 0.0
