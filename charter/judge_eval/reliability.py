"""Calibration of soft labels: expected calibration error and a reliability table.

A judge's ``p_chosen`` is only useful as a soft label (or for margin filtering) if a 0.8 means
"right four times in five". We bin the judge's confidence in its own verdict
(``max(p, 1 - p)``) and compare each bin's mean confidence with how often the verdict matched
the human label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


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


def plot_reliability(
    curves: dict[str, Sequence[ReliabilityBin]], path: Path, *, title: str = "Reliability"
) -> None:
    """Write a reliability diagram (PNG): accuracy against confidence, one line per judge.

    The diagonal is perfect calibration; points below it are overconfident. Marker area grows
    with the bin's size, since a bin of three verdicts says little. Rendered with matplotlib's
    Agg backend (no display needed) into a temp file that is renamed, so a crash never leaves
    half an image.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    try:
        ax.plot([0.5, 1.0], [0.5, 1.0], color="grey", linestyle="--", label="calibrated")
        for name, bins in curves.items():
            if not bins:
                continue
            total = sum(b.count for b in bins)
            (line,) = ax.plot([b.confidence for b in bins], [b.accuracy for b in bins], label=name)
            ax.scatter(
                [b.confidence for b in bins],
                [b.accuracy for b in bins],
                s=[20 + 300 * b.count / total for b in bins],
                color=line.get_color(),
                alpha=0.6,
            )
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("confidence in the verdict, max(p, 1 - p)")
        ax.set_ylabel("agreement with the human label")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)
