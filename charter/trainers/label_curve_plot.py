"""``label_curve.png``: held-out accuracy against the number of training labels.

One line per label source with Wilson 95% intervals as error bars, on a log2 axis (the counts
double), beside the two lines a reader needs to judge them: chance (0.5) and what "the longer
response wins" scores on the same held-out pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from charter.trainers.label_curve import CurvePoint

CURVE_PLOT = "label_curve.png"
_COLOURS = {"human": "#3465a4", "judge": "#cc6633"}


def write_curve_plot(
    path: Path, points: Sequence[CurvePoint], baseline: float | None, *, title: str = ""
) -> Path:
    """Held-out accuracy against label count (log2 axis), one line per label source, Wilson
    95% intervals as error bars; chance (0.5) and the longer-response baseline as lines.

    Drawn on a bare :class:`~matplotlib.figure.Figure` (no pyplot, no GUI backend) into a temp
    file that is renamed, so a crash never leaves half an image.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    ax = fig.subplots()
    sources = list(dict.fromkeys(p.source for p in points))
    for i, source in enumerate(sources):
        mine = sorted((p for p in points if p.source == source), key=lambda p: p.count)
        # a small sideways shift per source keeps overlapping intervals readable
        shift = 2 ** (0.04 * (i - (len(sources) - 1) / 2))
        xs = [p.count * shift for p in mine]
        ys = [p.accuracy for p in mine]
        errors = [[y - p.ci95[0] for y, p in zip(ys, mine, strict=True)],
                  [p.ci95[1] - y for y, p in zip(ys, mine, strict=True)]]  # fmt: skip
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3,
                    color=_COLOURS.get(source, "#555753"), label=f"{source} labels")  # fmt: skip
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--", label="chance")
    if baseline is not None:
        ax.axhline(baseline, color="#4e9a06", linewidth=0.8, linestyle=":",
                   label=f"longer response wins ({baseline:.2f})")  # fmt: skip
    counts = sorted({p.count for p in points})
    ax.set_xscale("log", base=2)
    if counts:
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
    ax.set_xlabel("training pairs (labels)")
    ax.set_ylabel("accuracy on held-out human labels")
    if title:
        ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small", loc="best")
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    tmp.replace(path)
    return path
